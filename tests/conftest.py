"""Shared fixtures: where the real data sets are, and real MNIST digits."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from training.data import load_split

ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` run where torch sees a GPU and are skipped, visibly (-ra), elsewhere."""
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    import torch  # only when cuda tests were collected: the service tests never load torch here

    if torch.cuda.is_available():
        return
    reason = f"no CUDA device (torch {torch.__version__}, cuda.is_available() is False): run these on a GPU machine"
    for item in cuda_items:
        item.add_marker(pytest.mark.skip(reason=reason))


def shared_data_dir() -> Path:
    """$VQVAE_DATA_DIR, else ../shared/data beside the checkout; asserts the real data is there."""
    path = Path(os.environ.get("VQVAE_DATA_DIR") or ROOT.parent / "shared" / "data")
    assert (path / "mnist").is_dir(), f"real data expected in {path} (set VQVAE_DATA_DIR)"
    return path


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared MNIST / Fashion-MNIST folder; tests fail loudly (never skip) if it is missing."""
    return shared_data_dir()


@pytest.fixture(scope="session")
def mnist_test(data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    return load_split("mnist", "test", data_dir)
