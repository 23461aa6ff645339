"""The serving (version, model) pair under concurrent scoring while background rounds swap it."""

import threading
import time

import numpy as np
import torch
from deep_helpers import fill_window

from learners.deep.finetune import WindowedFineTuner
from learners.deep.model import CandidateRanker


def test_scorers_see_whole_models_and_monotone_versions_while_rounds_swap(make_window, device):
    window = make_window(device=device)
    fill_window(window, 600, 8, 4)
    tuner = WindowedFineTuner(lambda: CandidateRanker(4, hidden=(16,), prior_feature=0), window,
                              every_events=1, min_samples=100, background=True, device=device, k=2,
                              batch_size=64, epochs=1)
    x = torch.randn(32, 8, 4, device=device)
    seen: list[list[tuple[int, int, float]]] = [[] for _ in range(2)]
    stop = threading.Event()

    def score(out: list[tuple[int, int, float]]) -> None:
        while not stop.is_set():
            served = tuner.serving  # the one read a scorer makes per batch
            if served.model is None:
                continue
            with torch.inference_mode():
                total = float(served.model(x).sum())
            out.append((served.version, id(served.model), total))
            time.sleep(0.0005)

    scorers = [threading.Thread(target=score, args=(out,)) for out in seen]
    for t in scorers:
        t.start()
    events = 600
    deadline = time.monotonic() + 60
    while len(tuner.rounds) < 3 and time.monotonic() < deadline:
        tuner.tick(events)
        tuner.wait()
        events += 1
        fill_window(window, 50, 8, 4, seed=events, start=events)
    stop.set()
    for t in scorers:
        t.join()
    assert len(tuner.rounds) >= 3 and tuner.serving.version >= 2
    by_version: dict[int, tuple[int, float]] = {}
    for out in seen:
        versions = [v for v, _, _ in out]
        assert versions == sorted(versions)  # never goes back
        for version, model_id, total in out:
            # one version is one model, and scoring it always gives the same numbers: no half swap
            first = by_version.setdefault(version, (model_id, total))
            assert first[0] == model_id and np.isclose(first[1], total, rtol=1e-5, atol=1e-4)
    assert len(by_version) >= 2


def test_background_rounds_leave_the_main_threads_torch_threads_alone(make_window):
    window = make_window()
    fill_window(window, 500, 8, 4)
    torch.set_num_threads(2)  # what a stream's main thread may use (the fixture restores it)
    torch.ones(64, 64) @ torch.ones(64, 64)  # the main thread's pool is initialised
    tuner = WindowedFineTuner(lambda: CandidateRanker(4, hidden=(8,)), window, every_events=1,
                              min_samples=100, background=True, device="cpu", threads=1)
    tuner.tick(500)
    tuner.wait()
    assert tuner.rounds, "the round ran"
    # OpenMP keeps thread counts per thread; other builds are process-wide (documented in finetune.py)
    if "OpenMP" in torch.__config__.parallel_info():
        assert torch.get_num_threads() == 2
