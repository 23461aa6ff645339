"""The deep re-ranker: scores each candidate of the online sources from its features.

Two-stage pattern: the online learners propose candidates (top-C of their blend) and describe each one
(every source's score, popularity, recency, item age, the user's own history with the item, ...);
`CandidateRanker` scores the (event, candidate) pairs with an MLP shared across candidates, optionally
helped by item embeddings (warm-started from the online matrix factorisation's item factors) matched
against a sequence encoding of the user's recent items. It is trained listwise: a softmax over each
event's candidates with the item the user actually took next as the label.

>>> import torch
>>> ranker = CandidateRanker(n_features=5, hidden=(16, 8))
>>> ranker(torch.randn(3, 7, 5)).shape  # 3 events x 7 candidates
torch.Size([3, 7])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class CandidateRanker(nn.Module):
    """MLP over standardized candidate features, plus an optional item-embedding match.

    Parameters
    ----------
    n_features
        Features per (event, candidate).
    hidden
        Widths of the MLP's hidden layers.
    n_items, item_dim
        With `item_dim > 0`: an item embedding table of `n_items` rows; the user is the mean of the
        embeddings of their recent items (`history`, -1 padded) and the dot product user x candidate
        joins the MLP's input. Rows can be warm-started with `load_item_vectors`.
    """

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (64, 32),
        n_items: int = 0,
        item_dim: int = 0,
        prior_feature: int | None = None,
    ) -> None:
        super().__init__()
        if n_features < 1:
            raise ValueError(f"n_features must be positive, got {n_features}")
        self.n_features = n_features
        self.hidden = tuple(int(h) for h in hidden)
        self.n_items = int(n_items)
        self.item_dim = int(item_dim)
        self.prior_feature = prior_feature
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        width = n_features + (1 if item_dim else 0)
        layers: list[nn.Module] = []
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)
        self.skip = nn.Linear(n_features + (1 if item_dim else 0), 1, bias=False)
        nn.init.zeros_(self.skip.weight)
        if prior_feature is not None:
            with torch.no_grad():
                self.skip.weight[0, prior_feature] = 1.0
                nn.init.zeros_(layers[-1].weight)
                nn.init.zeros_(layers[-1].bias)
        self.item_embedding = nn.Embedding(max(self.n_items, 1) + 1, item_dim) if item_dim else None
        if self.item_embedding is not None:
            nn.init.normal_(self.item_embedding.weight, std=0.05)
            with torch.no_grad():
                self.item_embedding.weight[-1].zero_()  # the padding row (index -1)

    def config(self) -> dict[str, object]:
        return {"n_features": self.n_features, "hidden": list(self.hidden), "n_items": self.n_items,
                "item_dim": self.item_dim, "prior_feature": self.prior_feature}

    @torch.no_grad()
    def fit_standardizer(self, features: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Set the input standardization from a window of features [N, C, F]."""
        rows = features.reshape(-1, self.n_features) if valid is None else features[valid]
        if len(rows) == 0:
            return
        rows = rows.float()
        self.mean.copy_(rows.mean(0))
        self.scale.copy_(rows.std(0, unbiased=False).clamp_min(1e-3))

    @torch.no_grad()
    def load_item_vectors(self, vectors: torch.Tensor, rows: torch.Tensor | None = None) -> None:
        """Warm-start item embeddings (e.g. from the online MF's item factors), truncated/zero-padded
        to `item_dim` columns."""
        if self.item_embedding is None:
            return
        rows = torch.arange(len(vectors)) if rows is None else rows
        keep = rows < self.n_items
        d = min(self.item_dim, vectors.shape[1])
        target = self.item_embedding.weight
        target[rows[keep].to(target.device), :d] = vectors[keep, :d].to(target.device, target.dtype)

    def forward(
        self,
        features: torch.Tensor,
        candidates: torch.Tensor | None = None,
        history: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores [B, C] of candidates from features [B, C, F] (and item columns [B, C], history [B, L]
        when the model has item embeddings)."""
        x = (features.float() - self.mean) / self.scale
        if self.item_embedding is not None:
            if candidates is None or history is None:
                raise ValueError("this ranker has item embeddings: pass candidates and history")
            pad = self.n_items  # the zero row: unknown or padding items
            cand = torch.where((candidates >= 0) & (candidates < pad), candidates, pad)
            hist = torch.where((history >= 0) & (history < pad), history, pad)
            h = self.item_embedding(hist)  # [B, L, d]
            n_hist = (hist != pad).sum(1, keepdim=True).clamp_min(1)
            user = h.sum(1) / n_hist  # [B, d]
            match = torch.einsum("bcd,bd->bc", self.item_embedding(cand), user)
            x = torch.cat([x, match.unsqueeze(-1)], dim=-1)
        return (self.mlp(x) + self.skip(x)).squeeze(-1)


def listwise_loss(scores: torch.Tensor, label: torch.Tensor, n_valid: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy of the label column among each row's valid candidates."""
    cols = torch.arange(scores.shape[1], device=scores.device)
    masked = scores.masked_fill(cols >= n_valid.unsqueeze(1), float("-inf"))
    return nn.functional.cross_entropy(masked, label)


def hit_rate(scores: torch.Tensor, label: torch.Tensor, n_valid: torch.Tensor, k: int = 10) -> float:
    """Share of rows whose label is among the top `k` valid candidates (ties count against)."""
    if len(label) == 0:
        return 0.0
    cols = torch.arange(scores.shape[1], device=scores.device)
    masked = scores.masked_fill(cols >= n_valid.unsqueeze(1), float("-inf"))
    positive = masked.gather(1, label.unsqueeze(1))
    rank = (masked >= positive).sum(1) - 1
    return float((rank < k).float().mean())
