from pathlib import Path

import numpy as np
import pytest

SHARED_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "pima-indians-diabetes.csv"


@pytest.fixture(scope="session")
def pima_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The real Pima data: float32 features and int labels, read from ../shared/data."""
    data = np.loadtxt(SHARED_CSV, delimiter=",", dtype=np.float32)
    return data[:, :8], data[:, 8].astype(np.int64)


@pytest.fixture
def dataset_server():
    """A real HTTP server on 127.0.0.1 serving the shared CSV as /pima.csv."""
    from tests.unit.http_server import DatasetServer

    with DatasetServer({"pima.csv": SHARED_CSV}) as server:
        yield server
