"""A deployment run loads its model only from the folders `foldflow server` allows, checked
before the file is read as code; outside a server nothing is restricted."""

import pytest

from tasks.errors import ConfigError
from tasks.model.allowed import allowed_model_folders, allowed_model_reference


def evil_model(folder):
    """A model file that leaves a marker the moment it is imported."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "imported"
    path = folder / "evil.py"
    path.write_text(f"open({str(marker)!r}, 'w').close()\ndef f():\n    pass\n")
    return path, marker


def test_the_folders_come_from_the_variable_and_none_means_unrestricted(tmp_path):
    assert allowed_model_folders({}) is None
    value = f"{tmp_path / 'a'}:{tmp_path / 'b'}"
    assert allowed_model_folders({"FOLDFLOW_ALLOWED_MODELS": value}) == [
        tmp_path / "a",
        tmp_path / "b",
    ]


def test_a_model_file_outside_the_allowed_folders_is_refused_unread(tmp_path):
    path, marker = evil_model(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match="outside the folders this server allows") as refused:
        allowed_model_reference(f"{path}:f", tmp_path, [tmp_path / "project"])
    assert str(tmp_path / "project") in str(refused.value)
    assert "--allow-models" in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1
    assert not marker.exists()


def test_a_link_inside_the_allowed_folder_to_a_file_outside_is_refused(tmp_path):
    path, _ = evil_model(tmp_path / "elsewhere")
    project = tmp_path / "project"
    project.mkdir()
    (project / "model.py").symlink_to(path)
    with pytest.raises(ConfigError, match="outside"):
        allowed_model_reference("model.py:f", project, [project])
    with pytest.raises(ConfigError, match="outside"):
        allowed_model_reference("../elsewhere/evil.py:f", project, [project])


def test_a_model_file_inside_is_given_by_its_real_path_and_mlp_always_passes(tmp_path):
    path, marker = evil_model(tmp_path / "project" / "models")
    project = tmp_path / "project"
    assert allowed_model_reference("models/evil.py:f", project, [project]) == f"{path}:f"
    assert allowed_model_reference("mlp", project, []) == "mlp"
    assert allowed_model_reference(f"{path}:f", project, None) == f"{path}:f"
    assert not marker.exists()


def test_a_package_is_allowed_only_from_an_allowed_folder_and_never_imported(tmp_path, monkeypatch):
    package = tmp_path / "elsewhere" / "strangers_pkg"
    package.mkdir(parents=True)
    marker = tmp_path / "imported"
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (package / "models.py").write_text("def f():\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path / "elsewhere"))
    with pytest.raises(ConfigError, match="package 'strangers_pkg' .* is outside"):
        allowed_model_reference("strangers_pkg.models:f", tmp_path, [tmp_path / "project"])
    reference = "strangers_pkg.models:f"
    assert allowed_model_reference(reference, tmp_path, [tmp_path / "elsewhere"]) == reference
    assert not marker.exists()
