"""Checkpoints written by a forked child: the learner pauses for `fork()` only.

`fork()` gives the child a copy-on-write image of the whole process at one instant, so the child can
build the learner's `state_dict()` and write it (`stream.checkpoint.save_checkpoint`) while the parent
goes on learning: the parent pauses only while the kernel copies page tables, and afterwards pays a
page copy the first time it writes to a page the child still shares. The parent waits for the child
(`ForkedCheckpoint.wait`) on another thread. This is how Redis' BGSAVE snapshots a live dataset.

Only for processes where a forked child is safe: POSIX, and CUDA not initialised (it does not survive a
fork). torch on CPU is fine: the child only reads tensors into numpy arrays (a deep stage's weights in
`state_dict()`), which runs no parallel op, so the OpenMP pool the fork leaves behind is never used.
`fork_is_safe()` says so, and callers fall back to copying the state on the learner's thread.

>>> import tempfile
>>> import numpy as np
>>> from learners.base import State
>>> class Counter:
...     def __init__(self): self.counts = np.zeros(3)
...     def state_dict(self): return State(users={}, items={"counts": self.counts.copy()}, meta={})
>>> learner, d = Counter(), tempfile.mkdtemp()
>>> learner.counts[0] = 1
>>> pending = fork_checkpoint(learner, d, {"interactions:0": 7}, {})
>>> learner.counts[1] = 5  # learned after the fork: not in that checkpoint
>>> from stream.checkpoint import load_checkpoint
>>> state, offsets, _ = load_checkpoint(pending.wait())
>>> state.items["counts"].tolist(), offsets
([1.0, 0.0, 0.0], {'interactions:0': 7})
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stream.checkpoint import CheckpointError, save_checkpoint

__all__ = ["ForkedCheckpoint", "fork_checkpoint", "fork_is_safe"]

_MAX_MESSAGE = 4096


class HasStateDict(Protocol):
    def state_dict(self) -> Any: ...


def fork_is_safe() -> bool:
    """Whether this process can checkpoint from a forked child: POSIX fork, and CUDA not initialised."""
    if not hasattr(os, "fork"):
        return False
    torch = sys.modules.get("torch")
    return torch is None or not torch.cuda.is_initialized()


@dataclass
class ForkedCheckpoint:
    """A checkpoint being written by child `pid`; `wait()` (any thread, once) returns its path."""

    pid: int
    pipe_fd: int  # read end: the child writes "ok <path>" or its error
    started: float = field(default_factory=time.perf_counter)

    def wait(self) -> Path:
        with os.fdopen(self.pipe_fd, "rb") as pipe:
            message = pipe.read().decode(errors="replace")
        _, status = os.waitpid(self.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code != 0 or not message.startswith("ok "):
            raise CheckpointError(f"checkpoint child {self.pid} failed (exit status {code}): "
                                  f"{message or 'no message'}")
        return Path(message[3:])


def fork_checkpoint(learner: HasStateDict, state_dir: str | Path, offsets: Mapping[str, int],
                    meta: Mapping[str, Any] | None = None, keep: int = 3) -> ForkedCheckpoint:
    """Fork; the child saves `learner.state_dict()` with `offsets` and `meta` under `state_dir` and
    exits. Call with the learner quiescent (the caller's lock held): the child sees it as it is now."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            gc.disable()  # no finalizer of an inherited object (sockets, clients) runs in the child
            os.close(read_fd)
            path = save_checkpoint(state_dir, learner.state_dict(), offsets, meta, keep=keep)
            os.write(write_fd, f"ok {path}".encode())
            code = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent through the pipe
            try:
                os.write(write_fd, f"{type(exc).__name__}: {exc}".encode()[:_MAX_MESSAGE])
            except OSError:
                pass
        finally:
            os._exit(code)
    os.close(write_fd)
    return ForkedCheckpoint(pid, read_fd)
