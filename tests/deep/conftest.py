"""Fixtures of the deep tests: the devices to run on, windows, one torch thread."""

from __future__ import annotations

import pytest
import torch

from learners.deep.finetune import sample_fields
from learners.deep.window import SlidingWindow

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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
