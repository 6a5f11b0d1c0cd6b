"""A spec for one's own file needs only what the file cannot say: `columns` (headerless),
`target` and `task` (issue 25's "Done when"); the file itself comes from --data."""

import pytest

from tasks.data.fetch import download_dataset
from tasks.dataset_spec import DatasetSpec
from tasks.errors import ConfigError


def test_a_spec_file_without_name_or_url_is_named_after_the_file(tmp_path):
    path = tmp_path / "my census.yaml"
    path.write_text("columns: [age, income]\ntarget: income\ntask: binary\n")
    spec = DatasetSpec.from_yaml(path)
    assert spec.name == "my-census" and spec.url == ""


def test_a_name_the_file_cannot_give_falls_back_to_data(tmp_path):
    path = tmp_path / "...yaml"
    path.write_text("columns: [a, y]\ntarget: y\n")
    assert DatasetSpec.from_yaml(path).name == "data"


def test_without_url_or_data_the_download_names_the_way_out(tmp_path):
    spec = DatasetSpec(name="mine", columns=["a", "y"], target="y")
    with pytest.raises(ConfigError, match="names no url: give the file with --data"):
        download_dataset.fn(spec, tmp_path)
