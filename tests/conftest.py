"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distillrec.utils import DATA_DIR_ENV
from distillrec.utils import data_dir as resolve_data_dir


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder with the shared real data sets ($DISTILLREC_DATA_DIR); a clear failure when it is missing."""
    path = resolve_data_dir()
    if not path.is_dir():
        pytest.fail(
            f"data folder {path} does not exist: set ${DATA_DIR_ENV} to the shared data sets "
            "(`make test` sets it to ../shared/data)",
            pytrace=False,
        )
    return path


@pytest.fixture
def one_thread():
    """One torch intra-op thread for the test: the tensors in these tests are tiny, and a second thread only
    adds hand-off stalls on a busy 2-core CI machine. Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
