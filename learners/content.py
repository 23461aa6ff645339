"""Content signal from catalog metadata: hashed title/tag tokens, so announced items can be ranked
before their first interaction.

Each item with `ItemMeta` gets a unit vector: the signed feature hashing (stable crc32, not Python's
salted `hash`) of its lower-cased title words and `tag:`-prefixed tags. A user's content profile is the
position-decayed mean of their recent items' vectors; the score is the cosine-like dot product.

>>> import numpy as np
>>> from learners.base import ItemMeta
>>> content = HashedContent(dim=64)
>>> content.set_items(np.array([0, 1, 2]), [ItemMeta("a", "Blue jazz night", ("jazz",)),
...     ItemMeta("b", "Cool jazz", ("jazz",)), ItemMeta("c", "Metal storm", ("metal",))])
>>> s = content.score(np.array([[0, -1]]), n_items=3)[0]
>>> bool(s[1] > s[2])
True
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np
import torch

from learners.base import ItemMeta
from learners.ids import grow_rows

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def tokens(meta: ItemMeta) -> list[str]:
    """Title words (lower case, 2+ chars) and tags of an item."""
    words = [w for w in _WORD.findall(meta.title.lower()) if len(w) > 1]
    return words + [f"tag:{t.strip().lower()}" for t in meta.tags if t.strip()]


class HashedContent:
    """Hashed-token content embedding source.

    Parameters
    ----------
    dim
        Hashing dimension.
    decay
        Weight factor per step back in the user's recent items.
    """

    name = "content"

    def __init__(self, dim: int = 128, decay: float = 0.9) -> None:
        self.dim = dim
        self.decay = decay
        self.vectors = np.zeros((0, dim), dtype=np.float32)
        self.n_with_meta = 0

    def resize(self, n_items: int) -> None:
        self.vectors = grow_rows(self.vectors, n_items)

    def reset_items(self, cols: np.ndarray) -> None:
        self.n_with_meta -= int((np.abs(self.vectors[cols]).sum(1) > 0).sum())
        self.vectors[cols] = 0.0

    def embed(self, meta: ItemMeta) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for tok in tokens(meta):
            h = zlib.crc32(tok.encode("utf-8"))
            vec[h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        norm = float(np.linalg.norm(vec))
        return vec / norm if norm > 0 else vec

    def set_items(self, cols: np.ndarray, metas: Sequence[ItemMeta]) -> None:
        if len(cols) != len(metas):
            raise ValueError("one column per ItemMeta")
        if not len(cols):
            return
        self.resize(int(np.max(cols)) + 1)
        had = np.abs(self.vectors[cols]).sum(1) > 0
        self.vectors[cols] = np.stack([self.embed(m) for m in metas])
        self.n_with_meta += int((~had).sum())

    def has_meta(self, n_items: int) -> np.ndarray:
        """Which of the first n_items columns have a content vector."""
        self.resize(n_items)
        return np.abs(self.vectors[:n_items]).sum(1) > 0

    def set_vectors(self, vectors: np.ndarray) -> None:
        self.vectors = np.asarray(vectors, dtype=np.float32).copy()
        self.n_with_meta = int((np.abs(self.vectors).sum(1) > 0).sum()) if len(self.vectors) else 0

    def score_cols(self, recent: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(B, len(cols)) scores of the given item columns only."""
        self.resize(int(cols.max(initial=0)) + 1)
        return self.profiles(recent) @ self.vectors[cols].T

    def profiles(self, recent: np.ndarray) -> np.ndarray:
        """(B, dim) decayed mean content vector of each event's recent items."""
        valid = recent >= 0
        w = np.where(valid, self.decay ** np.arange(recent.shape[1], dtype=np.float32)[None, :], 0.0)
        w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
        self.resize(int(recent.max(initial=0)) + 1)
        return np.einsum("bl,bld->bd", w.astype(np.float32), self.vectors[np.maximum(recent, 0)])

    def score(self, recent: np.ndarray, n_items: int) -> np.ndarray:
        self.resize(n_items)
        # torch, not numpy's BLAS (see learners.mf)
        profiles = torch.from_numpy(self.profiles(recent))
        return torch.mm(profiles, torch.from_numpy(self.vectors[:n_items]).T).numpy()

    def score_pairs(self, recent: np.ndarray, cols: np.ndarray) -> np.ndarray:
        self.resize(int(cols.max(initial=0)) + 1)
        return np.einsum("bd,bmd->bm", self.profiles(recent), self.vectors[cols])
