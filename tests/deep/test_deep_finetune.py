import math

import numpy as np
import torch
from deep_helpers import fill_window

from learners.deep.finetune import WindowedFineTuner
from learners.deep.model import CandidateRanker


def _tuner(window, device="cpu", **kwargs) -> WindowedFineTuner:
    kwargs.setdefault("every_events", 1000)
    kwargs.setdefault("min_samples", 100)
    kwargs.setdefault("k", 2)  # of 8 candidates
    kwargs.setdefault("batch_size", 64)
    kwargs.setdefault("lr", 0.01)
    return WindowedFineTuner(lambda: CandidateRanker(4, hidden=(16,)), window, background=False,
                             device=device, **kwargs)


def test_a_round_changes_the_model_and_lowers_the_window_loss(make_window, device):
    window = make_window(device=device)
    fill_window(window, 2000, 8, 4)
    tuner = _tuner(window, device, epochs=3, fixed_cost_s=0.0)
    model, report = tuner.run_round(None, 2000)
    assert report is not None and model is not None
    assert report.loss_after < report.loss_before - 0.3  # ln(8) = 2.08 for a model that knows nothing
    assert report.hr_new > report.hr_serving  # beats the first-stage order (candidate 0 first)
    again, second = tuner.run_round(model, 2000)
    assert second is not None and again is not model
    changed = [not torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values(),
                                                       strict=True)]
    assert any(changed)


def test_replay_swap_waits_for_the_events_the_cost_stands_for(make_window):
    window = make_window()
    fill_window(window, 2000, 8, 4)
    tuner = _tuner(window, fixed_cost_s=0.25, live_rate=4000.0)
    tuner.tick(2000)
    report = tuner.rounds[-1]
    assert report.accepted and report.serve_from_event == 2000 + math.ceil(0.25 * 4000)
    tuner.tick(2999)
    assert tuner.serving.version == 0  # still running, as far as the live stream is concerned
    tuner.tick(3000)
    assert tuner.serving.version == 1 and tuner.serving.model is not None


def test_a_round_trains_only_on_events_before_its_trigger(make_window):
    window = make_window()
    fill_window(window, 1000, 8, 4)
    fill_window(window, 1000, 8, 4, seed=1, start=1000)
    tuner = _tuner(window, fixed_cost_s=0.0)
    _, report = tuner.run_round(None, 1000)
    assert report is not None and report.samples == (1000 - 100) * tuner.epochs


def test_a_worse_model_is_rejected_and_the_serving_one_kept(make_window):
    window = make_window()
    fill_window(window, 1800, 8, 4, random_labels=True)  # training part: noise
    fill_window(window, 200, 8, 4, seed=3, start=1800)  # newest slice: feature 0 decides
    serving = CandidateRanker(4, hidden=(16,), prior_feature=0)  # ranks by feature 0 exactly
    tuner = _tuner(window, fixed_cost_s=0.0, lr=0.05, epochs=5)
    tuner.restore(serving, 7)
    tuner.tick(2000)
    tuner.tick(2000)
    assert tuner.rounds[-1].accepted is False and tuner.rejected == 1
    assert tuner.serving.version == 7 and tuner.serving.model is serving


def test_replay_is_deterministic_with_a_fixed_cost(make_window):
    weights = []
    for _ in range(2):
        window = make_window()
        fill_window(window, 2000, 8, 4)
        tuner = _tuner(window, fixed_cost_s=0.1, seed=5)
        tuner.tick(2000)
        tuner.tick(10_000)
        weights.append(torch.cat([p.detach().flatten() for p in tuner.serving.model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_too_small_a_window_starts_no_round(make_window):
    window = make_window()
    fill_window(window, 50, 8, 4)
    tuner = _tuner(window, fixed_cost_s=0.0)
    tuner.tick(1000)
    assert tuner.rounds == [] and tuner.serving.version == 0
    assert np.isfinite(tuner.evaluate_hit_rate(None, window.snapshot()))
