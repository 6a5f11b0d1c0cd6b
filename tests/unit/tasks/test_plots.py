import io
import json

import numpy as np
import pandas as pd
from PIL import Image

from tasks.config import DEFAULT_GRID_FILE, GridSpec, ModelParams
from tasks.plots import fold_scores_png, grid_heatmap_png, picture_markdown


def image_of(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_fold_scores_picture_is_a_real_png():
    table = pd.DataFrame(
        [{"params": "{}", **{f"split{k}_test_score": 0.6 + k / 50 for k in range(10)}}]
    )
    image = image_of(fold_scores_png(table))
    assert image.format == "PNG" and image.width > 300 and image.height > 150
    assert len(set(image.convert("L").getdata())) > 10  # not a blank canvas


def test_grid_heatmap_handles_the_tutorial_grid():
    combinations = GridSpec.from_yaml(DEFAULT_GRID_FILE).combinations(ModelParams())
    table = pd.DataFrame(
        {
            "params": [json.dumps(params, sort_keys=True) for params, _ in combinations],
            "mean_test_score": np.linspace(0.6, 0.76, len(combinations)),
        }
    )
    image = image_of(grid_heatmap_png(table))
    assert image.format == "PNG" and image.width > 400


def test_picture_markdown_embeds_the_png_as_a_data_uri():
    markdown = picture_markdown(b"\x89PNG-bytes", "Accuracy")
    assert "![Accuracy](data:image/png;base64,iVBORy1ieXRlcw==)" in markdown
