"""Shared helpers of the deep tests: a synthetic window whose labels follow the features."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from learners.deep.finetune import sample_fields
from learners.deep.window import SlidingWindow

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def fill_window(window: SlidingWindow, n: int, n_candidates: int, n_features: int, seed: int = 0,
                start: int = 0, random_labels: bool = False) -> None:
    """Events start..start+n whose taken candidate is the one with the largest feature 0 (plus noise)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_candidates, n_features)).astype(np.float32)
    if random_labels:
        label = rng.integers(0, n_candidates, n)
    else:
        label = (x[:, :, 0] + 0.3 * rng.gumbel(size=(n, n_candidates))).argmax(1)
    window.append(np.arange(start, start + n), np.arange(start, start + n, dtype=np.float64),
                  features=x, label=label, n_valid=np.full(n, n_candidates))


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


@pytest.fixture
def make_window():
    def make(capacity: int = 4000, n_candidates: int = 8, n_features: int = 4, device: str = "cpu",
             **kwargs) -> SlidingWindow:
        return SlidingWindow(capacity, sample_fields(n_candidates, n_features), device, **kwargs)

    return make


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The fine-tuner's setting; on a loaded 2-core machine more threads thrash (100x slower rounds)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
