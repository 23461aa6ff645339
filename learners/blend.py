"""Online blend of source scores: a linear score over per-source normalised features whose weights
are learned by pairwise logistic regression (each positive item should outscore sampled negatives).

Each source's features are divided by a running scale (an exponential moving average of their mean
absolute value), so weights are comparable across sources and the blend works on raw source scores.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> blend = Blend(["good", "noise"], lr=0.5)
>>> for _ in range(200):  # the positive wins on "good" only
...     neg = rng.random((32, 4, 2)); pos = rng.random((32, 2)); pos[:, 0] += 1
...     blend.learn(pos, neg)
>>> w = blend.weights
>>> bool(w[0] > 5 * abs(w[1]))
True
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class Blend:
    """Pairwise-logistic online weights over named sources.

    Parameters
    ----------
    names
        Source names, in the order of the feature axis.
    lr
        SGD step on the normalised weights.
    init
        Starting weights per name (default 1 for the first source, 0 else).
    reg
        L2 pull of the weights toward `init`, which keeps a noisy stream from wrecking a good prior.
    """

    def __init__(self, names: Sequence[str], lr: float = 0.05, init: dict[str, float] | None = None,
                 reg: float = 0.0, scale_momentum: float = 0.99) -> None:
        self.names = list(names)
        self.lr = lr
        self.reg = reg
        self.scale_momentum = scale_momentum
        init = init or {self.names[0]: 1.0}
        self.prior = np.array([float(init.get(n, 0.0)) for n in self.names])
        self.weights = self.prior.copy()
        self.scales = np.ones(len(self.names))
        self._scale_seen = np.zeros(len(self.names), dtype=bool)
        self.n_updates = 0

    def effective(self) -> np.ndarray:
        """Weights to apply to raw (unnormalised) source scores."""
        return self.weights / self.scales

    def _update_scales(self, feats: np.ndarray) -> None:
        flat = np.abs(feats.reshape(-1, len(self.names)))
        mean_abs = flat.mean(0)
        ok = mean_abs > 0
        fresh = ok & ~self._scale_seen
        self.scales[fresh] = mean_abs[fresh]
        m = self.scale_momentum
        steady = ok & self._scale_seen
        self.scales[steady] = m * self.scales[steady] + (1 - m) * mean_abs[steady]
        self._scale_seen |= ok

    def learn(self, positive: np.ndarray, negatives: np.ndarray) -> None:
        """positive[B, S]: source scores of the events' items; negatives[B, M, S] of sampled items."""
        if not len(positive):
            return
        self._update_scales(np.concatenate([positive[:, None, :], negatives], 1))
        diff = (positive[:, None, :] - negatives) / self.scales  # (B, M, S)
        margin = diff @ self.weights
        g = 0.5 * (1.0 - np.tanh(0.5 * margin))  # sigmoid(-margin)
        grad = (g[..., None] * diff).reshape(-1, len(self.names)).mean(0)
        self.weights += self.lr * (grad - self.reg * (self.weights - self.prior))
        self.n_updates += 1

    def state(self) -> dict:
        return {"names": self.names, "weights": self.weights.tolist(), "scales": self.scales.tolist(),
                "scale_seen": self._scale_seen.tolist(), "n_updates": self.n_updates}

    def load(self, state: dict) -> None:
        if list(state["names"]) != self.names:
            raise ValueError(f"blend sources {state['names']} differ from {self.names}")
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.scales = np.asarray(state["scales"], dtype=np.float64)
        self._scale_seen = np.asarray(state["scale_seen"], dtype=bool)
        self.n_updates = int(state["n_updates"])
