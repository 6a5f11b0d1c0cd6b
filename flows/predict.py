"""`foldflow predict RUN_FOLDER --data FILE [--output FILE]`: a run folder's refitted model on
new raw rows, one prediction per row, as CSV on stdout or into --output.

No Prefect run: reading the file and checking its columns come first, before TensorFlow loads,
so a file that does not match the training data is refused at once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, ConfigDict, Field


class PredictSettings(BaseModel):
    """What `foldflow predict` reads and writes (its flags are declared from these fields)."""

    model_config = ConfigDict(extra="forbid")

    run_folder: Path | None = Field(
        default=None, description="a grid or search run folder, refitted (not --no-refit)"
    )
    data: Path | None = Field(
        default=None,
        description="CSV (or Parquet) laid out like the training data, with or without the "
        "target column",
    )
    output: Path | None = Field(
        default=None,
        description="CSV to write: a prediction column, and a proba_<label> column per class "
        "for a classifier (default: standard output)",
    )


def predict_command(settings: PredictSettings, out: TextIO = sys.stdout) -> str:
    """Write the predictions; returns the line that says where they went ('' for stdout)."""
    from tasks.data.schema import load_input_schema, raw_features, read_rows

    schema = load_input_schema(settings.run_folder)
    frame, where = read_rows(settings.data, schema)
    rows = raw_features(frame, schema, where)
    from tasks.native_stderr import tensorflow_start_up_lines_held_back

    with tensorflow_start_up_lines_held_back():
        from tasks.train.saved import load_model

    table = load_model(settings.run_folder).predictions_table(rows, where)
    if settings.output is None:
        table.to_csv(out, index=False)
        return ""
    from tasks.files import write_text_atomically

    write_text_atomically(settings.output, table.to_csv(index=False))
    return f"{len(table)} predictions in {settings.output}"
