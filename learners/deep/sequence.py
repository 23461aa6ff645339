"""A sequence encoder over each user's recent items, fine-tuned on a sliding window of the stream.

`GRUEncoder` reads a user's last `length` items (oldest to newest) with a GRU and scores every item
column as the dot product of its state with a (tied) item embedding, plus an item bias: a GRU4Rec-like
next-item model trained with a full softmax over the item columns seen so far.

`SequenceSource` serves it as an online source of `learners.recommender.OnlineRecommender`
(``sources=[SequenceSource()]``): the blend learns its weight, the deep re-ranker sees its score of
every candidate as features, and with ``DeepReranker(per_source=k)`` its own top-k items join the
candidate set. Each learned event (its history, its item) enters a `SlidingWindow`; every
`every_events` events `SequenceFineTuner` continues training a copy of the serving encoder on the
window's events before the trigger, validates it on the newest slice (HR@10 over all items) and swaps
it in only if it is not worse. In replay (`background=False`) the new encoder serves from
``trigger + ceil(cost_s * live_rate)``; with ``cost_clock="cpu"`` the cost is the round's CPU time on
its one torch thread (what a dedicated core takes; on a loaded machine wall time mostly measures the
neighbours). New item rows are warm-started from `item_vectors()` (e.g. the online MF's factors).

>>> import numpy as np
>>> src = SequenceSource(dim=8, length=4, every_events=None, every_seconds=3600.0, device="cpu")
>>> history = np.array([[2, 1, -1, -1], [-1, -1, -1, -1]])
>>> src.score_histories(history, n_items=5).shape  # no encoder yet: zeros
(2, 5)
>>> src.learn_histories(history, np.array([3, 0]), np.zeros(2))
>>> len(src.window)
2
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from learners.deep.adam import Adam
from learners.deep.device import resolve_device
from learners.deep.finetune import RoundReport, WindowedFineTuner
from learners.deep.window import SlidingWindow

OUTPUTS = ("z", "logp", "logit", "prob")


class GRUEncoder(nn.Module):
    """Next-item scores from a user's recent items (GRU over the sequence, tied item embeddings).

    Parameters
    ----------
    n_items
        Item columns the tables hold (row `n_items` is the padding / unknown item).
    dim
        Embedding and hidden width.
    length
        Recent items read per user.
    """

    def __init__(self, n_items: int, dim: int = 64, length: int = 20, dropout: float = 0.0,
                 exclude_history: bool = True) -> None:
        super().__init__()
        if n_items < 1 or dim < 1 or length < 1:
            raise ValueError(f"n_items, dim and length must be positive, got {n_items}, {dim}, {length}")
        self.n_items = int(n_items)
        self.dim = int(dim)
        self.length = int(length)
        self.exclude_history = bool(exclude_history)
        self.embedding = nn.Embedding(self.n_items + 1, self.dim)
        nn.init.normal_(self.embedding.weight, std=0.05)
        with torch.no_grad():
            self.embedding.weight[-1].zero_()
        self.gru = nn.GRU(self.dim, self.dim, batch_first=True)
        self.out = nn.Linear(self.dim, self.dim)
        self.dropout = nn.Dropout(dropout)
        self.bias = nn.Parameter(torch.zeros(self.n_items + 1))
        # rows trained at least once; the others take warm-start vectors before a round
        self.register_buffer("trained", torch.zeros(self.n_items + 1, dtype=torch.bool))

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """User states [B, dim] from recent item columns [B, >=length] (most recent first, -1 padding)."""
        hist = history[:, : self.length]
        pad = self.n_items
        hist = torch.where((hist >= 0) & (hist < pad), hist, pad).flip(1)  # oldest first, pads first
        states, _ = self.gru(self.dropout(self.embedding(hist)))
        return self.out(states[:, -1])

    def forward(self, history: torch.Tensor, n_cols: int | None = None) -> torch.Tensor:
        """Logits [B, n_cols] over item columns 0..n_cols-1 (all rows by default)."""
        n_cols = self.n_items if n_cols is None else min(int(n_cols), self.n_items)
        user = self.encode(history)
        logits = user @ self.embedding.weight[:n_cols].T + self.bias[:n_cols]
        if self.exclude_history:  # the user's own items are never the answer (as the evaluator ranks)
            logits = logits.masked_fill(history_mask(history[:, : self.length], n_cols), float("-inf"))
        return logits

    @torch.no_grad()
    def warm_start(self, vectors: np.ndarray | torch.Tensor, scale: float = 1.0) -> int:
        """Copy `vectors[c]` (e.g. MF item factors, truncated/zero-padded to `dim`) into the rows of
        columns never trained; returns how many rows were set."""
        vectors = torch.as_tensor(np.asarray(vectors), dtype=torch.float32)
        n = min(len(vectors), self.n_items)
        rows = torch.nonzero(~self.trained[:n]).squeeze(1)
        if len(rows) == 0:
            return 0
        d = min(self.dim, vectors.shape[1])
        target = self.embedding.weight
        values = vectors[rows.cpu(), :d].to(target.device)
        norm = values.norm(dim=1, keepdim=True)
        ok = norm.squeeze(1) > 0  # zero MF rows (unseen items) keep their random init
        target[rows[ok], :d] = scale * 0.05 * math.sqrt(self.dim) * values[ok] / norm[ok]
        return int(ok.sum())

    def config(self) -> dict[str, int]:
        return {"n_items": self.n_items, "dim": self.dim, "length": self.length,
                "exclude_history": self.exclude_history}


def history_mask(history: torch.Tensor, n_cols: int) -> torch.Tensor:
    """[B, n_cols] True at the columns of each row's history items (-1 padding and columns beyond
    `n_cols` ignored)."""
    valid = (history >= 0) & (history < n_cols)
    index = torch.where(valid, history, n_cols)  # invalid entries land in a spare column, dropped
    mask = torch.zeros((len(history), n_cols + 1), dtype=torch.bool, device=history.device)
    mask.scatter_(1, index, True)
    return mask[:, :n_cols]


def next_item_hit_rate(model: GRUEncoder | None, history: torch.Tensor, item: torch.Tensor, n_cols: int,
                       k: int = 10, batch: int = 2048) -> float:
    """Share of events whose item is in the encoder's top `k` of `n_cols` columns (ties count against);
    0 without a model."""
    if model is None or len(item) == 0:
        return 0.0
    model.eval()
    hits = 0
    with torch.no_grad():
        for lo in range(0, len(item), batch):
            logits = model(history[lo: lo + batch], n_cols)
            target = item[lo: lo + batch]
            positive = logits.gather(1, target.clamp(max=n_cols - 1).unsqueeze(1))
            rank = (logits > positive).sum(1)
            hits += int(((rank < k) & (target < n_cols)).sum())
    return hits / len(item)


class SequenceFineTuner(WindowedFineTuner):
    """`WindowedFineTuner`'s schedule and swaps, with an encoder's round: full-softmax next-item
    training on the window's (history, item) samples. Live rounds run in a thread (the tuner's child
    process knows only the candidate ranker)."""

    def __init__(self, *args: Any, cost_clock: str = "wall", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if cost_clock not in ("wall", "cpu"):
            raise ValueError(f"cost_clock must be 'wall' or 'cpu', got {cost_clock!r}")
        self.cost_clock = cost_clock

    @property
    def mode(self) -> str:
        return "replay" if self.background is False else "thread"

    def round_clock(self) -> float:
        if self.cost_clock == "cpu" and self.device.type == "cpu":  # the round runs on this thread
            return time.thread_time()
        return super().round_clock()

    def train_round(self, model: GRUEncoder, serving: GRUEncoder | None, data: dict[str, torch.Tensor],
                    trigger_event: int, fresh: bool) -> tuple[GRUEncoder, RoundReport]:
        n = len(data["item"])
        n_val = max(1, int(n * self.holdout))
        train = {k: v[: n - n_val] for k, v in data.items()}
        val = {k: v[n - n_val:] for k, v in data.items()}
        n_cols = int(data["item"].max()) + 1
        if self.prepare is not None:
            self.prepare(model)  # warm-start rows of items it has not trained on yet
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed + trigger_event)
        loss_before = self.evaluate_loss(model, train)
        self.train_epochs(model, train, generator)
        loss_after = self.evaluate_loss(model, train)
        with torch.no_grad():
            model.trained[torch.unique(train["item"])] = True
        hr_new = next_item_hit_rate(model, val["history"], val["item"], n_cols, self.k)
        hr_serving = next_item_hit_rate(serving, val["history"], val["item"], n_cols, self.k)
        report = RoundReport(trigger_event=trigger_event, samples=(n - n_val) * self.epochs, seconds=0.0,
                             loss_before=loss_before, loss_after=loss_after, hr_new=hr_new,
                             hr_serving=hr_serving, accepted=hr_new >= hr_serving)
        model.eval()
        return model, report

    def train_epochs(self, model: GRUEncoder, data: dict[str, torch.Tensor],
                     generator: torch.Generator) -> None:
        """Batches are index slices of a permutation of the resident window; full softmax over the
        columns the window knows."""
        model.train()
        optimizer = Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)  # no torch._dynamo
        n = len(data["item"])
        n_cols = int(data["item"].max()) + 1 if n else 1
        for _ in range(self.epochs):
            order = torch.randperm(n, device=self.device, generator=generator)
            for lo in range(0, n, self.batch_size):
                idx = order[lo: lo + self.batch_size]
                logits = model(data["history"][idx], n_cols)
                loss = nn.functional.cross_entropy(logits, data["item"][idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    @torch.no_grad()
    def evaluate_loss(self, model: GRUEncoder, data: dict[str, torch.Tensor], limit: int = 2048) -> float:
        if len(data["item"]) == 0:
            return float("nan")
        sl = slice(max(0, len(data["item"]) - limit), None)
        model.eval()
        n_cols = int(data["item"].max()) + 1
        return float(nn.functional.cross_entropy(model(data["history"][sl], n_cols), data["item"][sl]))


class SequenceSource:
    """The encoder as an online source (`OnlineRecommender(sources=[...])`), fine-tuned on a window.

    Parameters
    ----------
    dim, length, max_items
        Encoder width, recent items read, item columns held (the recommender's `max_items`). The
        defaults fit one CPU core (~1.5 s a round); a GPU affords dim 64 and 3 epochs of a 50k window.
    output
        "z": logits standardized per row (default), "logp": log-softmax over the item columns,
        "logit": raw logits, "prob": softmax.
    exclude_history
        The user's recent items are no next-item answer: masked out of the softmax, repeat events
        left out of the window (the evaluator ranks only items outside the user's history).
    window_events, every_events, every_seconds
        Window span (events) and fine-tune cadence.
    epochs, batch_size, lr
        Each round's training (Adam), continuing from the serving encoder.
    background
        False (replay): synchronous rounds with a delayed swap; True: a background thread.
    live_rate, fixed_cost_s, cost_clock
        The replay's swap delay: events/s of the live stream, an optional fixed round cost, and the
        clock the measured cost is read on ("wall", or "cpu": the round's thread CPU time).
    item_vectors
        Optional callable returning an [n, d] array of item vectors by column (warm start).
    """

    name = "seq"

    def __init__(
        self,
        dim: int = 32,
        length: int = 20,
        max_items: int = 8192,
        output: str = "z",
        exclude_history: bool = True,
        window_events: int = 20_000,
        every_events: int | None = 5_000,
        every_seconds: float | None = None,
        epochs: int = 1,
        batch_size: int = 512,
        lr: float = 3e-3,
        holdout: float = 0.1,
        background: bool = False,
        live_rate: float = 5_000.0,
        fixed_cost_s: float | None = None,
        cost_clock: str = "wall",
        threads: int = 1,
        item_vectors: Callable[[], np.ndarray | None] | None = None,
        device: str | torch.device | None = "auto",
        seed: int = 0,
    ) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.dim = dim
        self.length = length
        self.max_items = max_items
        self.output = output
        self.exclude_history = exclude_history
        self.window_events = window_events
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.holdout = holdout
        self.background = background
        self.live_rate = live_rate
        self.fixed_cost_s = fixed_cost_s
        self.cost_clock = cost_clock
        self.threads = threads
        self.item_vectors = item_vectors
        self.device = resolve_device(device)
        self.seed = seed
        fields = {"history": ((length,), torch.int64), "item": ((), torch.int64)}
        self.window = SlidingWindow(window_events, fields, self.device, span_events=window_events)
        self.tuner = SequenceFineTuner(
            self._build_model, self.window, every_events=every_events, every_seconds=every_seconds,
            epochs=epochs, batch_size=batch_size, lr=lr, holdout=holdout, background=background,
            live_rate=live_rate, fixed_cost_s=fixed_cost_s, threads=threads, device=self.device, seed=seed,
            min_samples=1000, cost_clock=cost_clock,
        )
        self.tuner.prepare = self._warm_start
        self.events = 0
        self._stale = np.zeros(0, dtype=bool)  # recycled columns the serving encoder knows as others

    def _build_model(self) -> GRUEncoder:
        return GRUEncoder(self.max_items, self.dim, self.length,
                          exclude_history=self.exclude_history).to(self.device)

    def _warm_start(self, model: GRUEncoder) -> None:
        vectors = self.item_vectors() if self.item_vectors is not None else None
        if vectors is not None and len(vectors):
            model.warm_start(vectors)
        self._stale[:] = False  # the new round's rows are re-initialised for recycled columns

    @property
    def model_version(self) -> int:
        return self.tuner.serving.version

    # ----------------------------------------------------------------------------- core
    def score_histories(self, history: np.ndarray, n_items: int, own_items: str = "min") -> np.ndarray:
        """Scores [B, n_items] from recent item columns [B, L'] (most recent first, -1 padding); zeros
        before the first accepted round and for columns beyond the encoder's table. With
        `exclude_history` the user's own items score the row's minimum (`own_items="min"`), or its
        mean ("mean": no opinion)."""
        out = np.zeros((len(history), n_items), dtype=np.float32)
        model = self.tuner.serving.model
        if model is None or not len(history) or not n_items:
            return out
        width = min(n_items, model.n_items)
        hist = torch.from_numpy(_fit_width(np.asarray(history, np.int64), self.length)).to(self.device)
        with torch.inference_mode():
            logits = model(hist, width).float()
            masked = ~torch.isfinite(logits)  # the user's own items
            if self.output == "logp":
                logits = torch.log_softmax(logits, 1)
            elif self.output == "prob":
                logits = torch.softmax(logits, 1)
            elif self.output == "z":  # spread, not offset: the blend scales sources by mean |score|
                count = (~masked).sum(1, keepdim=True).clamp_min(1)
                values = logits.masked_fill(masked, 0.0)
                mean = values.sum(1, keepdim=True) / count
                var = ((values - mean).masked_fill(masked, 0.0) ** 2).sum(1, keepdim=True) / count
                logits = (logits - mean) / var.sqrt().clamp_min(1e-6)
            if own_items == "min":
                fill = logits.masked_fill(masked, float("inf")).min(1, keepdim=True).values
            else:
                fill = logits.masked_fill(masked, 0.0).sum(1, keepdim=True) / (~masked).sum(1, keepdim=True)
            logits = torch.where(masked, torch.where(torch.isfinite(fill), fill, 0.0), logits)
            out[:, :width] = logits.cpu().numpy()
        stale = np.flatnonzero(self._stale[:width])
        if len(stale):
            out[:, stale] = out[:, :width].min(1, keepdims=True)
        return out

    def learn_histories(self, history: np.ndarray, items: np.ndarray, ts: np.ndarray) -> None:
        """Window samples of learned events (their history before the event, their item column) and the
        fine-tune schedule."""
        items = np.asarray(items, dtype=np.int64)
        n = len(items)
        hist = _fit_width(np.asarray(history, np.int64), self.length)
        keep = (items >= 0) & (items < self.max_items)
        if self.exclude_history:  # repeats are not next-item targets (nor evaluated as such)
            keep &= ~(hist == items[:, None]).any(1)
        if keep.any():
            hist = hist[keep]
            hist = np.where(hist < self.max_items, hist, -1)
            self.window.append(self.events + np.flatnonzero(keep), np.asarray(ts, np.float64)[keep],
                               history=hist, item=items[keep])
        self.events += n
        self.tuner.tick(self.events)

    # ----------------------------------------------------------------------------- source interface
    def score(self, ctx: Any) -> np.ndarray:
        return self.score_histories(ctx.recent, ctx.n_items)

    def score_pairs(self, ctx: Any, cols: np.ndarray) -> np.ndarray:
        cols = np.asarray(cols, dtype=np.int64)
        if self.tuner.serving.model is None or cols.size == 0:
            return np.zeros(cols.shape, dtype=np.float32)
        n = max(ctx.n_items, int(cols.max()) + 1)
        # the blend learns its weights from these pairs on every event, repeats included: there the
        # positive is the user's own item, which the encoder leaves to the other sources (no opinion;
        # at the row's minimum the repeats of yoochoose taught the blend to drop the encoder)
        return np.take_along_axis(self.score_histories(ctx.recent, n, own_items="mean"), cols, 1)

    def learn(self, ctx: Any) -> None:
        self.learn_histories(ctx.recent, ctx.items, ctx.ts)

    def reset_items(self, cols: np.ndarray) -> None:
        """Recycled columns: scored at the row minimum until the next round re-initialises them."""
        cols = np.asarray(cols, dtype=np.int64)
        if not len(cols):
            return
        if len(self._stale) <= cols.max():
            grown = np.zeros(int(cols.max()) + 1, dtype=bool)
            grown[: len(self._stale)] = self._stale
            self._stale = grown
        self._stale[cols] = True
        serving = self.tuner.serving.model
        if serving is not None:  # the next round's copy must not keep the evicted items' rows
            inside = torch.as_tensor(cols[cols < serving.n_items], device=serving.trained.device)
            serving.trained[inside] = False

    def close(self) -> None:
        self.tuner.close()

    def stats(self) -> dict[str, Any]:
        rounds = self.tuner.rounds
        seconds = [r.seconds for r in rounds]
        samples = sum(r.samples for r in rounds)
        return {
            "model_version": self.model_version,
            "rounds": len(rounds),
            "rejected": self.tuner.rejected,
            "skipped_busy": self.tuner.skipped_busy,
            "window": len(self.window),
            "seconds_per_round": float(np.mean(seconds)) if seconds else None,
            "samples_per_s": samples / sum(seconds) if seconds and sum(seconds) > 0 else None,
            "cost_clock": self.cost_clock,
            "hr_new": [round(r.hr_new, 4) for r in rounds],
            "device": str(self.device),
        }


def _fit_width(history: np.ndarray, length: int) -> np.ndarray:
    """History columns cut or -1 padded to `length`."""
    if history.ndim != 2:
        raise ValueError(f"history must be [n, L], got shape {history.shape}")
    if history.shape[1] >= length:
        return np.ascontiguousarray(history[:, :length])
    pad = np.full((len(history), length - history.shape[1]), -1, dtype=np.int64)
    return np.concatenate([history, pad], 1)
