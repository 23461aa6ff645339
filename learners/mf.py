"""Incremental matrix factorisation, one vectorised SGD step per micro-batch.

Every event is a positive interaction for a BPR ranking loss against sampled negative items
(p_u . q_i should beat p_u . q_j); rating events also train a rating head
r ~ mean + b_u + b_i + p_u . q_i with squared loss (`predict`). A user's updates within one batch are
averaged, so a user's burst of events does not take one giant step.

>>> import numpy as np
>>> mf = MatrixFactorization(dim=4, seed=0)
>>> mf.resize(n_users=2, n_items=3)
>>> for _ in range(300):
...     mf.learn(np.array([0, 1]), np.array([0, 2]), negatives=np.array([[1], [1]]))
>>> bool(mf.score(np.array([0]))[0, 0] > mf.score(np.array([0]))[0, 1])
True
"""

from __future__ import annotations

import numpy as np
import torch

from learners.ids import grow_rows


def _scatter_add(table: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """table[rows] += values with repeated rows summed (torch's index_add_: np.add.at is slow)."""
    source = torch.from_numpy(values.astype(table.dtype))
    torch.from_numpy(table).index_add_(0, torch.from_numpy(rows), source)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class MatrixFactorization:
    """BPR / squared-loss incremental MF source.

    Parameters
    ----------
    dim
        Latent factors.
    lr, reg
        SGD step and L2 penalty of the ranking loss.
    rating_lr
        SGD step of the rating head.
    """

    name = "mf"

    def __init__(self, dim: int = 32, lr: float = 0.05, reg: float = 0.002, rating_lr: float = 0.01,
                 seed: int = 0) -> None:
        self.dim = dim
        self.lr = lr
        self.reg = reg
        self.rating_lr = rating_lr
        self.seed = seed
        self.lr_scale = 1.0  # raised for a while after drift
        self._rng = np.random.default_rng(seed)
        self.user_factors = np.zeros((0, dim), dtype=np.float32)
        self.item_factors = np.zeros((0, dim), dtype=np.float32)
        self.user_bias = np.zeros(0, dtype=np.float32)
        self.item_bias = np.zeros(0, dtype=np.float32)
        self.mean = 0.0
        self.n_ratings = 0

    def _init_rows(self, n: int) -> np.ndarray:
        return (self._rng.standard_normal((n, self.dim)) * 0.1).astype(np.float32)

    def resize(self, n_users: int, n_items: int) -> None:
        for name, n in (("user", n_users), ("item", n_items)):
            factors = getattr(self, f"{name}_factors")
            if n > len(factors):
                old = len(factors)
                grown = grow_rows(factors, n)
                if name == "user":  # items start at zero: an unseen item's MF score is 0, not noise
                    grown[old:] = self._init_rows(len(grown) - old)
                setattr(self, f"{name}_factors", grown)
                setattr(self, f"{name}_bias", grow_rows(getattr(self, f"{name}_bias"), n))

    def reset_users(self, cols: np.ndarray) -> None:
        self.user_factors[cols] = self._init_rows(len(cols))
        self.user_bias[cols] = 0.0

    def reset_items(self, cols: np.ndarray) -> None:
        self.item_factors[cols] = 0.0
        self.item_bias[cols] = 0.0

    def score(self, users: np.ndarray, n_items: int | None = None, scale: float = 1.0) -> np.ndarray:
        """(B, n_items) scale * p_u . q_j; users < 0 (unknown) score 0."""
        n_items = len(self.item_factors) if n_items is None else n_items
        self.resize(len(self.user_factors), n_items)
        p = torch.from_numpy(self._users(users) * np.float32(scale))
        # torch, not numpy's BLAS: alternating two thread pools makes both spin (10x slower here)
        return torch.mm(p, torch.from_numpy(self.item_factors[:n_items]).T).numpy()

    def score_pairs(self, users: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return np.einsum("bd,bmd->bm", self._users(users), self.item_factors[cols])

    def _users(self, users: np.ndarray) -> np.ndarray:
        """User factors, zeros for unknown users (< 0 or not yet sized)."""
        known = (users >= 0) & (users < len(self.user_factors))
        p = np.zeros((len(users), self.dim), dtype=np.float32)
        p[known] = self.user_factors[users[known]]
        return p

    def learn(self, users: np.ndarray, items: np.ndarray, negatives: np.ndarray,
              ratings: np.ndarray | None = None) -> None:
        """One BPR step on (users, items) against `negatives[B, M]`; rating head where ratings given
        (NaN: no rating)."""
        lr = self.lr * self.lr_scale
        p = self.user_factors[users]  # (B, d)
        q_pos = self.item_factors[items]  # (B, d)
        q_neg = self.item_factors[negatives]  # (B, M, d)
        diff = q_pos[:, None, :] - q_neg
        g = _sigmoid(-np.einsum("bd,bmd->bm", p, diff)).astype(np.float32)  # (B, M)
        _, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
        per_user = counts[inverse].astype(np.float32)  # events of the user in this batch
        grad_p = np.einsum("bm,bmd->bd", g, diff) / negatives.shape[1] - self.reg * p
        grad_pos = g.mean(1, keepdims=True) * p - self.reg * q_pos
        grad_neg = -(g[:, :, None] * p[:, None, :]) / negatives.shape[1] - self.reg * q_neg
        _scatter_add(self.user_factors, users, lr * grad_p / per_user[:, None])
        _scatter_add(self.item_factors, np.concatenate([items, negatives.ravel()]),
                     lr * np.concatenate([grad_pos, grad_neg.reshape(-1, self.dim)]))
        if ratings is not None:
            rated = np.flatnonzero(~np.isnan(ratings))
            if len(rated):
                self._learn_ratings(users[rated], items[rated], ratings[rated].astype(np.float32),
                                    per_user[rated])

    def _learn_ratings(self, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                       per_user: np.ndarray) -> None:
        self.n_ratings += len(ratings)
        self.mean += float((ratings - self.mean).sum()) / self.n_ratings
        err = ratings - self.predict(users, items)
        lr = self.rating_lr * self.lr_scale
        p, q = self.user_factors[users], self.item_factors[items]
        np.add.at(self.user_bias, users, lr * (err - self.reg * self.user_bias[users]) / per_user)
        np.add.at(self.item_bias, items, lr * (err - self.reg * self.item_bias[items]))
        _scatter_add(self.user_factors, users, lr * (err[:, None] * q) / per_user[:, None])
        _scatter_add(self.item_factors, items, lr * err[:, None] * p)

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Rating predictions; -1 columns (unknown) fall back to the known parts."""
        known_u = (users >= 0) & (users < len(self.user_factors))
        known_i = (items >= 0) & (items < len(self.item_factors))
        u, i = np.where(known_u, users, 0), np.where(known_i, items, 0)
        if not len(self.user_factors) or not len(self.item_factors):
            return np.full(len(users), self.mean, dtype=np.float32)
        dot = np.einsum("bd,bd->b", self.user_factors[u], self.item_factors[i])
        return (self.mean + np.where(known_u, self.user_bias[u], 0) + np.where(known_i, self.item_bias[i], 0)
                + np.where(known_u & known_i, dot, 0)).astype(np.float32)
