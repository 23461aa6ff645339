"""Helpers of the deep tests (a module with a unique name: every test folder has a conftest)."""

from __future__ import annotations

import numpy as np

from learners.deep.window import SlidingWindow


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
