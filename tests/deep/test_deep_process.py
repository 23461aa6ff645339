"""Fine-tune rounds in a child process (background="process", the CPU default of background=True)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from deep_helpers import fill_window

from learners.deep.finetune import WindowedFineTuner
from learners.deep.model import CandidateRanker

REPO = Path(__file__).resolve().parents[2]


def _gone(pid: int) -> bool:
    """The process no longer runs (a zombie waiting for its reaper counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.1)
    return _gone(pid)


def _tuner(window, **kwargs) -> WindowedFineTuner:
    return WindowedFineTuner(lambda: CandidateRanker(4, hidden=(16,)), window, every_events=1000,
                             min_samples=100, k=2, batch_size=64, lr=0.01, epochs=3, device="cpu", **kwargs)


def test_a_process_round_trains_swaps_atomically_under_scoring_and_close_ends_the_child(make_window):
    window = make_window()
    fill_window(window, 2000, 8, 4)
    tuner = _tuner(window, background=True)
    assert tuner.mode == "process"  # background=True on CPU
    x = torch.randn(32, 8, 4)
    seen: list[tuple[int, int, float]] = []
    stop = threading.Event()

    def score() -> None:
        while not stop.is_set():
            served = tuner.serving  # one read per batch, as the re-ranker does
            if served.model is not None:
                with torch.inference_mode():
                    seen.append((served.version, id(served.model), float(served.model(x).sum())))
            time.sleep(0.0005)

    scorer = threading.Thread(target=score)
    scorer.start()
    try:
        tuner.tick(2000)
        assert tuner.busy(2000) and tuner.serving.version == 0  # the stream went on: nothing swapped yet
        pid = tuner._worker.pid
        assert pid is not None and pid != os.getpid()
        tuner.wait(timeout=120)
        first = tuner.serving
        assert first.version == 1 and len(tuner.rounds) == 1
        report = tuner.rounds[0]
        assert report.accepted and report.version == 1
        assert report.loss_after < report.loss_before - 0.3  # ln(8) = 2.08 for a model that knows nothing
        assert report.hr_new > report.hr_serving
        # the same round synchronously gives the same figures: the child runs the tuner's own round
        model, again = _tuner(window, background=False).run_round(None, 2000)
        assert again is not None and model is not None
        assert np.isclose(again.loss_after, report.loss_after, rtol=1e-4)
        fill_window(window, 1000, 8, 4, seed=1, start=2000)
        tuner.tick(3000)  # the second round reuses the same child
        assert tuner._worker.pid == pid
        tuner.wait(timeout=120)
    finally:
        stop.set()
        scorer.join()
    second = tuner.serving
    assert len(tuner.rounds) == 2
    if tuner.rounds[1].accepted:
        assert second.version == 2 and second.model is not first.model
        changed = [not torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                           second.model.state_dict().values(), strict=True)]
        assert any(changed)
    by_version: dict[int, tuple[int, float]] = {}
    versions = [v for v, _, _ in seen]
    assert versions == sorted(versions) and versions  # never goes back
    for version, model_id, total in seen:
        known = by_version.setdefault(version, (model_id, total))  # one version = one whole model
        assert known[0] == model_id and np.isclose(known[1], total, rtol=1e-5, atol=1e-4)
    tuner.close()
    assert tuner._worker is None and _wait_gone(pid, 10)


def test_thread_mode_stays_selectable_and_bad_modes_are_refused(make_window):
    window = make_window()
    fill_window(window, 500, 8, 4)
    tuner = _tuner(window, background="thread")
    tuner.tick(1000)
    tuner.close()
    assert tuner.mode == "thread" and tuner._worker is None and tuner.serving.version == 1
    with pytest.raises(ValueError, match="background"):
        _tuner(window, background="fork")


def test_the_child_exits_when_its_parent_is_killed(tmp_path):
    script = textwrap.dedent("""
        import os, signal, sys, time
        sys.path.insert(0, sys.argv[1])
        sys.path.insert(0, os.path.join(sys.argv[1], "tests", "deep"))
        import torch
        from deep_helpers import fill_window
        from learners.deep.finetune import WindowedFineTuner, sample_fields
        from learners.deep.model import CandidateRanker
        from learners.deep.window import SlidingWindow

        if __name__ == "__main__":
            torch.set_num_threads(1)
            window = SlidingWindow(20000, sample_fields(8, 4))
            fill_window(window, 20000, 8, 4)
            tuner = WindowedFineTuner(lambda: CandidateRanker(4, hidden=(16,)), window, every_events=1,
                                      min_samples=100, epochs=50, batch_size=16, device="cpu")
            tuner.tick(20000)  # a long round: the child is busy training when we die
            print(tuner._worker.pid, flush=True)
            time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    path = tmp_path / "killed_parent.py"
    path.write_text(script)
    proc = subprocess.run([sys.executable, str(path), str(REPO)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    pid = int(proc.stdout.split()[0])
    # the round in hand would take minutes: the child leaves without finishing it
    if not _wait_gone(pid, 15):
        os.kill(pid, 9)
        pytest.fail("the fine-tune child outlived its killed parent")


def test_a_child_that_cannot_start_leaves_the_rounds_to_a_thread(make_window, monkeypatch, caplog):
    from learners.deep import trainer_process

    def refuse(self) -> None:
        raise RuntimeError("no processes here")

    monkeypatch.setattr(trainer_process.TrainerProcess, "_start", refuse)
    window = make_window()
    fill_window(window, 500, 8, 4)
    tuner = _tuner(window, background=True)
    tuner.tick(1000)  # the start fails: warned, and the next tick runs the round in a thread
    assert tuner.mode == "thread" and "cannot start the fine-tune process" in caplog.text
    tuner.tick(1001)
    tuner.close()
    assert len(tuner.rounds) == 1 and tuner.serving.version == 1
