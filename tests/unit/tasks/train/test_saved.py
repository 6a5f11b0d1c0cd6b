"""A run folder's saved model is loaded only from a run that finished."""

from __future__ import annotations

import pytest

from tasks.errors import ConfigError
from tasks.files import INCOMPLETE_MARKER
from tasks.train.saved import load_model


def test_a_run_folder_still_marked_incomplete_is_refused_naming_it(tmp_path):
    (tmp_path / INCOMPLETE_MARKER).write_text("stopped")
    with pytest.raises(ConfigError, match=f"run folder {tmp_path}: the run did not finish"):
        load_model(tmp_path)
