"""A persistent child process that runs fine-tune rounds off the stream's interpreter (and its GIL).

A round in a thread shares the GIL with the stream: its Python (optimizer steps, autograd glue) halves
the stream's throughput on CPU. `TrainerProcess` starts one spawned child on the first round (daemon,
torch on `threads` threads, `os.nice(nice)`), sends it the round's window snapshot and the model to
start from (CPU tensors travel as shared memory through torch's reductions, so the pipe carries only
handles), and hands back the trained state_dict and the round's report. `submit` and `poll` never
block the caller; the child exits when `close` asks, on EOF of its pipe, or (mid-round) within half a
second of its parent's death (it watches its parent id).

>>> # the WindowedFineTuner drives it; see learners/deep/finetune.py (background="process")
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.multiprocessing as mp  # registers torch's shared-memory reductions for tensors

from learners.deep.model import CandidateRanker

log = logging.getLogger(__name__)


@dataclass
class RoundJob:
    """One round: train a copy of `model` on `data` (the window before `trigger_event`)."""

    trigger_event: int
    data: dict[str, torch.Tensor]
    model: CandidateRanker  # the start: a copy of the serving model, or a new one when `fresh`
    fresh: bool  # no serving model yet: fit the standardizer first, validate against the first stage


@dataclass
class RoundResult:
    trigger_event: int
    state: dict[str, torch.Tensor] | None  # the trained weights; None when the round failed
    report: Any  # learners.deep.finetune.RoundReport (seconds: the child's compute time)
    error: str | None = None


class TrainerProcess:
    """One spawned worker process for a `WindowedFineTuner`'s rounds, one round in flight at most.

    `params` are the tuner's round hyper-parameters (keyword arguments of `WindowedFineTuner`)."""

    def __init__(self, params: dict[str, Any], threads: int = 1, nice: int = 10) -> None:
        self.params = params
        self.threads = threads
        self.nice = nice
        self._process: Any = None
        self._conn: Any = None
        self._in_flight: RoundJob | None = None

    @property
    def busy(self) -> bool:
        return self._in_flight is not None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # fork would copy the stream's threads and locks
        parent_end, child_end = ctx.Pipe(duplex=True)
        args = (child_end, self.params, self.threads, self.nice)
        process = ctx.Process(target=serve_rounds, args=args, name="streamrec-finetune", daemon=True)
        try:
            process.start()
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        self._process = process  # the child's end lives in the child only: the parent's exit gives it EOF
        self._conn = parent_end

    def submit(self, job: RoundJob) -> None:
        """Send a round to the child (started on first use). Cheap: tensors go as shared memory."""
        if self._in_flight is not None:
            raise RuntimeError("a round is already in flight")
        if self._process is None or not self._process.is_alive():
            self._shutdown(timeout=0.0)
            self._start()
        self._conn.send(job)
        self._in_flight = job

    def poll(self, timeout: float | None = 0.0) -> tuple[RoundJob, RoundResult] | None:
        """The finished round (its job and result), or None while it runs; `timeout=None` waits."""
        job = self._in_flight
        if job is None:
            return None
        try:
            if not self._conn.poll(timeout):
                if self._process.is_alive():
                    return None
                raise EOFError("the fine-tune process died")
            result: RoundResult = self._conn.recv()
        except (EOFError, OSError) as exc:
            self._shutdown(timeout=0.0)  # the next round starts a fresh child
            result = RoundResult(job.trigger_event, None, None, error=repr(exc))
        self._in_flight = None
        return job, result

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child (it finishes nothing more): ask, then terminate if it does not exit."""
        self._in_flight = None
        self._shutdown(timeout)

    def _shutdown(self, timeout: float) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if conn is not None:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
            conn.close()
        if process is not None and process.pid is not None:
            process.join(timeout)
            if process.is_alive():
                process.terminate()
                process.join(1.0)
            if process.is_alive():
                process.kill()
                process.join(1.0)


def serve_rounds(conn: Any, params: dict[str, Any], threads: int, nice: int) -> None:
    """The child's loop: rounds until `None` or EOF (the parent closed its end or died)."""
    if nice and hasattr(os, "nice"):
        try:  # under CPU contention the stream's process goes first
            os.nice(nice)
        except OSError:
            pass
    torch.set_num_threads(threads)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    from learners.deep.finetune import WindowedFineTuner

    tuner = WindowedFineTuner(_no_model, None, background=False, device="cpu", **params)  # type: ignore[arg-type]
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        try:
            start = time.perf_counter()
            serving = None if job.fresh else job.model
            model, report = tuner.train_round(copy.deepcopy(job.model), serving, job.data, job.trigger_event,
                                              fresh=job.fresh)
            report.seconds = time.perf_counter() - start
            result = RoundResult(job.trigger_event, model.state_dict(), report)
        except Exception as exc:  # a failed round must not end the worker: report it to the parent
            result = RoundResult(job.trigger_event, None, None, error=repr(exc))
        del job
        try:
            conn.send(result)
        except (OSError, ValueError):
            return


def _exit_with_parent(parent: int, every_s: float = 0.5) -> None:
    """A parent killed mid-round (kill -9) sends no EOF until the round would end: leave at once."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(0)


def _no_model() -> CandidateRanker:
    raise RuntimeError("the fine-tune process receives its models")
