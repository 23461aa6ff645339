"""Fine-tune the deep ranker on the sliding window, in the background, and swap it in atomically.

Every `every_events` events (or `every_seconds` of wall time) a round copies the serving model, trains
the copy on the window's samples except the newest `holdout` share, validates both on that newest
slice, and swaps the copy in only if it is not worse (else the round counts as rejected). The swap is
one reference assignment of an immutable `(version, model)` pair, so a scorer sees either the old or
the new model, never a mix, and versions only grow.

Live (`background=True`, "process" or "thread"): the round runs while the stream goes on, on torch
`threads` threads at a lower CPU priority (`nice`). On CPU `True` means "process": a persistent spawned
child (`learners.deep.trainer_process`) trains and validates, so the round's Python does not hold the
stream's GIL; starting a round is a window snapshot + a send, and `tick` swaps in the result once it is
back (never blocking). On CUDA `True` means "thread" (a child would need its own CUDA context): a daemon
thread, with torch releasing the GIL in its kernels. `close` stops the child; it also exits on its own
when the parent dies (EOF on its pipe). `background=False` (replay): the round runs
synchronously on the events before the trigger and its model serves only from event
``trigger + ceil(cost_s * live_rate)``: the events a live stream would have seen meanwhile, where the
cost is the measured round time, or `fixed_cost_s` to make replays reproducible.

>>> import numpy as np, torch
>>> from learners.deep.model import CandidateRanker
>>> from learners.deep.window import SlidingWindow
>>> window = SlidingWindow(1000, sample_fields(n_candidates=4, n_features=3))
>>> tuner = WindowedFineTuner(lambda: CandidateRanker(3, hidden=(8,)), window, every_events=100,
...                           background=False, fixed_cost_s=0.01, min_samples=50)
>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=(200, 4, 3)).astype(np.float32)
>>> label = x[:, :, 0].argmax(1)  # the first feature decides
>>> window.append(np.arange(200), np.zeros(200), features=x, label=label, n_valid=np.full(200, 4))
>>> tuner.tick(200)  # trains now on events < 200; serves from event 200 + 0.01 * 5000 = 250
>>> tuner.serving.version, tuner.rounds[-1].serve_from_event
(0, 250)
>>> tuner.tick(250); tuner.serving.version
1
"""

from __future__ import annotations

import copy
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from learners.deep.adam import Adam
from learners.deep.device import resolve_device
from learners.deep.model import CandidateRanker, hit_rate, listwise_loss
from learners.deep.trainer_process import RoundJob, TrainerProcess
from learners.deep.window import SlidingWindow

log = logging.getLogger(__name__)
BACKGROUND_MODES = ("thread", "process")


def sample_fields(
    n_candidates: int, n_features: int, history: int = 0
) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Window fields of the ranker's training samples: one event = one positive among its candidates."""
    fields: dict[str, tuple[tuple[int, ...], torch.dtype]] = {
        "features": ((n_candidates, n_features), torch.float32),
        "label": ((), torch.int64),  # position of the taken item among the candidates
        "n_valid": ((), torch.int64),  # candidates actually present (the rest is padding)
    }
    if history:
        fields["candidates"] = ((n_candidates,), torch.int64)
        fields["history"] = ((history,), torch.int64)
    return fields


class Served(NamedTuple):
    """The serving model and its version, swapped together as one reference."""

    version: int
    model: CandidateRanker | None  # None: no model yet, keep the first-stage order


@dataclass
class RoundReport:
    trigger_event: int
    samples: int
    seconds: float
    loss_before: float
    loss_after: float
    hr_new: float
    hr_serving: float
    accepted: bool
    serve_from_event: int | None = None
    version: int | None = None


class WindowedFineTuner:
    """Periodic fine-tuning of a `CandidateRanker` on a `SlidingWindow`, with atomic swaps."""

    def __init__(
        self,
        build_model: Callable[[], CandidateRanker],
        window: SlidingWindow,
        *,
        every_events: int | None = 5000,
        every_seconds: float | None = None,
        epochs: int = 2,
        batch_size: int = 512,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        holdout: float = 0.1,
        k: int = 10,
        min_samples: int = 256,
        background: bool | str = True,
        live_rate: float = 5000.0,
        fixed_cost_s: float | None = None,
        threads: int = 1,
        nice: int = 10,
        device: str | torch.device | None = "auto",
        seed: int = 0,
    ) -> None:
        if every_events is None and every_seconds is None:
            raise ValueError("set every_events and/or every_seconds")
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {holdout}")
        if not isinstance(background, bool) and background not in BACKGROUND_MODES:
            raise ValueError(f"background must be True, False, 'thread' or 'process', got {background!r}")
        self.build_model = build_model
        self.window = window
        self.every_events = every_events
        self.every_seconds = every_seconds
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.holdout = holdout
        self.k = k
        self.min_samples = min_samples
        self.background = background
        self.live_rate = live_rate
        self.fixed_cost_s = fixed_cost_s
        self.threads = threads
        self.nice = nice
        # the window's tensors are where training must run: "auto" follows them (a CPU window under
        # STREAMREC_DEVICE=cuda trained on CUDA mixed devices); an explicit other device is an error
        window_device = getattr(window, "device", None)
        if device in (None, "auto") and window_device is not None:
            self.device = torch.device(window_device)
        else:
            self.device = resolve_device(device)
        if window_device is not None and torch.device(window_device).type != self.device.type:
            raise ValueError(f"the window lives on {window_device} but the tuner's device is {self.device}")
        self.seed = seed
        self._served = Served(0, None)
        self._swap_lock = threading.Lock()
        self._pending: list[tuple[int, CandidateRanker]] = []  # (serve_from_event, model), replay only
        self._thread: threading.Thread | None = None
        self._worker: TrainerProcess | None = None  # background="process": started on the first round
        self._submit_s = 0.0  # the stream's share of the round in flight (snapshot + send)
        self._shared: dict[str, torch.Tensor] | None = None  # the process rounds' snapshot buffers
        self._replay_busy_until = 0  # replay: the event the last round's cost runs until
        self._last_trigger_event = 0
        self._last_trigger_time = time.monotonic()
        self.rounds: list[RoundReport] = []
        self.skipped_busy = 0  # triggers that came while a background round was still running
        self.prepare: Callable[[CandidateRanker], None] | None = None  # e.g. warm-start embeddings

    # ----------------------------------------------------------------------------- serving side
    @property
    def serving(self) -> Served:
        """The current (version, model): read it once per scoring call and use that pair."""
        return self._served

    @property
    def rejected(self) -> int:
        return sum(not r.accepted for r in self.rounds)

    @property
    def mode(self) -> str:
        """"replay", "thread" or "process" (what `background=True` resolves to on this device)."""
        if self.background is False:
            return "replay"
        if isinstance(self.background, str):
            return self.background
        return "thread" if self.device.type == "cuda" else "process"

    def busy(self, events_seen: int) -> bool:
        """A round is running: live, its thread or child; in replay, until the events its cost stands
        for passed."""
        mode = self.mode
        if mode == "process":
            return self._worker is not None and self._worker.busy
        if mode == "thread":
            return self._thread is not None and self._thread.is_alive()
        return events_seen < self._replay_busy_until

    def _swap(self, model: CandidateRanker) -> int:
        with self._swap_lock:  # two swappers never hand out the same version
            version = self._served.version + 1
            self._served = Served(version, model)
            return version

    def restore(self, model: CandidateRanker | None, version: int) -> None:
        """Serve `model` as `version` (a checkpoint), replacing the current pair in one assignment."""
        with self._swap_lock:
            self._served = Served(int(version), model)

    # ----------------------------------------------------------------------------- scheduling
    def tick(self, events_seen: int, now: float | None = None) -> None:
        """Call after each learned micro-batch: `events_seen` events are in the window. Applies the
        replay swaps that are due and starts a round when one is due."""
        now = time.monotonic() if now is None else now
        self._apply_pending(events_seen)
        if self._worker is not None:
            self._collect(timeout=0.0)
        since = events_seen - self._last_trigger_event
        due_events = self.every_events is not None and since >= self.every_events
        due_time = self.every_seconds is not None and now - self._last_trigger_time >= self.every_seconds
        due = due_events or due_time
        if not due:
            return
        if self.busy(events_seen):
            self.skipped_busy += 1
            return
        self._last_trigger_event, self._last_trigger_time = events_seen, now
        if self.mode == "process":
            self._submit_round(events_seen)
        elif self.mode == "thread":
            self._thread = threading.Thread(
                target=self._background_round, args=(events_seen,), name="streamrec-finetune", daemon=True
            )
            self._thread.start()
        else:
            self._sync_round(events_seen)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running background round (if any) is over, and swap its model in."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self._worker is not None:
            self._collect(timeout)

    def close(self) -> None:
        """Finish the running background round, then stop the fine-tune process (if any)."""
        self.wait()
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.close()

    # ----------------------------------------------------------------------------- process rounds
    def _submit_round(self, trigger_event: int) -> None:
        """The stream's share of a process round: snapshot, copy the serving model, send."""
        start = time.perf_counter()
        if self.device.type != "cpu":
            raise ValueError(f"background='process' needs device='cpu', got {self.device}")
        if self._shared is None:  # rounds never overlap: one set of shared buffers serves them all
            self._shared = self.window.shared_buffers()
        data = self.window.snapshot(before_event=trigger_event, out=self._shared)
        if len(data["label"]) < self.min_samples:
            return
        serving = self._served.model
        model = self._start_model(serving, trigger_event)  # a copy: scorers keep their tensors untouched
        fresh = serving is None
        if fresh and self.prepare is not None:
            self.prepare(model)  # here, where its inputs live; the child fits the standardizer
        if self._worker is None:
            params = {name: getattr(self, name) for name in ("epochs", "batch_size", "lr", "weight_decay",
                                                             "holdout", "k", "min_samples", "seed")}
            params["every_events"] = 1
            self._worker = TrainerProcess(params, threads=self.threads, nice=self.nice)
            weakref.finalize(self, self._worker.close, 1.0)  # a tuner dropped without close()
        try:
            self._worker.submit(RoundJob(trigger_event, data, model, fresh))
        except Exception as exc:  # e.g. a main module without the `if __name__ == "__main__"` guard
            log.warning("cannot start the fine-tune process (%r): rounds run in a thread from now on", exc)
            self._worker = None
            self.background = "thread"
            self._last_trigger_event = trigger_event - (self.every_events or 0)  # retry at the next tick
            return
        self._submit_s = time.perf_counter() - start

    def _collect(self, timeout: float | None) -> None:
        """Swap in the finished process round's model (same rule as the thread's), if one is back."""
        assert self._worker is not None
        start = time.perf_counter()
        done = self._worker.poll(timeout)
        if done is None:
            return
        job, result = done
        if result.error is not None or result.state is None:
            log.warning("fine-tune round at event %d failed: %s", job.trigger_event, result.error)
            return
        report = result.report
        model = job.model  # the copy we sent: load the trained weights into our own tensors
        model.load_state_dict(result.state)
        model.eval()
        report.seconds += self._submit_s + time.perf_counter() - start
        if report.accepted:
            report.version = self._swap(model)
        self.rounds.append(report)

    def _apply_pending(self, events_seen: int) -> None:
        while self._pending and self._pending[0][0] <= events_seen:
            _, model = self._pending.pop(0)
            self._swap(model)

    def _sync_round(self, trigger_event: int) -> None:
        previous = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        try:
            model, report = self.run_round(self._served.model, trigger_event)
        finally:
            torch.set_num_threads(previous)
        if report is None:
            return
        cost = report.seconds if self.fixed_cost_s is None else self.fixed_cost_s
        report.serve_from_event = trigger_event + math.ceil(cost * self.live_rate)
        self._replay_busy_until = report.serve_from_event
        self.rounds.append(report)
        if report.accepted and model is not None:
            self._pending.append((report.serve_from_event, model))

    def _background_round(self, trigger_event: int) -> None:
        if self.nice and hasattr(os, "setpriority"):
            try:  # Linux: per-thread niceness; under CPU contention the stream's thread goes first
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
            except OSError:
                pass
        if self.device.type == "cpu":
            # OpenMP builds keep this per thread; elsewhere it is process-wide, which the serving path
            # tolerates: it scores a few hundred rows per micro-batch.
            torch.set_num_threads(self.threads)
        model, report = self.run_round(self._served.model, trigger_event)
        if report is None:
            return
        if report.accepted and model is not None:
            report.version = self._swap(model)
        self.rounds.append(report)

    # ----------------------------------------------------------------------------- one round
    def run_round(
        self, serving: CandidateRanker | None, trigger_event: int
    ) -> tuple[CandidateRanker | None, RoundReport | None]:
        """Train a copy of `serving` on the window's events before `trigger_event`; validate it against
        `serving` on the newest slice. Returns (new model, report), or (None, None) when the window
        is too small. The round's cost (`report.seconds`) is read on `round_clock`."""
        start = self.round_clock()
        data = self.window.snapshot(before_event=trigger_event)
        n = len(next(iter(data.values())))  # samples: every field has one row per sample
        if n < self.min_samples:
            return None, None
        model = self._start_model(serving, trigger_event)
        model, report = self.train_round(model, serving, data, trigger_event, fresh=serving is None)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        report.seconds = self.round_clock() - start
        return model, report

    def round_clock(self) -> float:
        """Seconds on the clock a round's cost is measured with: wall time."""
        return time.perf_counter()

    def _start_model(self, serving: CandidateRanker | None, trigger_event: int) -> CandidateRanker:
        torch.manual_seed(self.seed + trigger_event)  # a new model's initial weights
        model = self.build_model() if serving is None else copy.deepcopy(serving)
        return model.to(self.device)

    def train_round(
        self, model: CandidateRanker, serving: CandidateRanker | None, data: dict[str, torch.Tensor],
        trigger_event: int, fresh: bool,
    ) -> tuple[CandidateRanker, RoundReport]:
        """Train `model` in place on `data` except its newest `holdout` share; validate it against
        `serving` on that share. A `fresh` model first fits its standardizer (and `prepare`)."""
        n = len(data["label"])
        n_val = max(1, int(n * self.holdout))
        train = {k: v[: n - n_val] for k, v in data.items()}
        val = {k: v[n - n_val :] for k, v in data.items()}
        if fresh:
            model.fit_standardizer(train["features"], _valid_mask(train))
            if self.prepare is not None:
                self.prepare(model)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(self.seed + trigger_event)
        loss_before = self.evaluate_loss(model, train)
        self.train_epochs(model, train, generator)
        loss_after = self.evaluate_loss(model, train)
        hr_new = self.evaluate_hit_rate(model, val)
        hr_serving = self.evaluate_hit_rate(serving, val)
        report = RoundReport(
            trigger_event=trigger_event, samples=(n - n_val) * self.epochs, seconds=0.0,
            loss_before=loss_before, loss_after=loss_after, hr_new=hr_new, hr_serving=hr_serving,
            accepted=hr_new >= hr_serving,
        )
        model.eval()
        return model, report

    def train_epochs(self, model: CandidateRanker, data: dict[str, torch.Tensor],
                     generator: torch.Generator) -> None:
        """The hot loop: batches are index slices of a permutation of device-resident tensors."""
        model.train()
        optimizer = Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)  # no torch._dynamo
        n = len(data["label"])
        fields = [name for name in ("features", "label", "n_valid", "candidates", "history") if name in data]
        for _ in range(self.epochs):
            order = torch.randperm(n, device=self.device, generator=generator)
            for lo in range(0, n, self.batch_size):
                idx = order[lo : lo + self.batch_size]
                batch = {name: data[name][idx] for name in fields}
                scores = model(batch["features"], batch.get("candidates"), batch.get("history"))
                loss = listwise_loss(scores, batch["label"], batch["n_valid"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

    @torch.no_grad()
    def evaluate_loss(
        self, model: CandidateRanker, data: dict[str, torch.Tensor], limit: int = 2048
    ) -> float:
        sl = slice(max(0, len(data["label"]) - limit), None)  # the newest samples: a cheap, stable estimate
        model.eval()
        scores = model(data["features"][sl], _get(data, "candidates", sl), _get(data, "history", sl))
        return float(listwise_loss(scores, data["label"][sl], data["n_valid"][sl]))

    @torch.no_grad()
    def evaluate_hit_rate(self, model: CandidateRanker | None, data: dict[str, torch.Tensor]) -> float:
        """HR@k among the candidates; with no model, of the first-stage order (candidate 0 first)."""
        if model is None:
            c = data["features"].shape[1]
            scores = -torch.arange(c, dtype=torch.float32, device=self.device).expand(len(data["label"]), c)
        else:
            model.eval()
            scores = model(data["features"], data.get("candidates"), data.get("history"))
        return hit_rate(scores, data["label"], data["n_valid"], self.k)


def _valid_mask(data: dict[str, torch.Tensor]) -> torch.Tensor:
    c = data["features"].shape[1]
    return torch.arange(c, device=data["features"].device) < data["n_valid"].unsqueeze(1)


def _get(data: dict[str, torch.Tensor], name: str, sl: slice) -> torch.Tensor | None:
    return data[name][sl] if name in data else None
