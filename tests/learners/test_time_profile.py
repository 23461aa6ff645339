"""`bench.time_profile`: timing the replay's phases must not change what the replay computes."""

from __future__ import annotations

import json
from pathlib import Path

from bench.replay import build_model, replay
from bench.time_profile import PHASES, main, profile_replay
from learners.base import RATING
from learners.drift import monitor_for
from learners.evaluate import PrequentialEvaluator
from learners.synthetic import generate


def test_timed_replay_ranks_exactly_like_the_plain_one() -> None:
    stream = generate(n_events=4000, seed=3)
    phases, model, events_per_s = profile_replay(stream.log, list(stream.items), 200, seed=0)
    plain = build_model(type("Args", (), {"no_deep": True, "seed": 0, "model": "online"})())
    evaluator = PrequentialEvaluator(seed=0, series_every=10)
    replay(stream.log, plain, list(stream.items), 200, evaluator, monitor_for(plain))
    assert phases["hr@10"] == evaluator.report()["hr@10"]
    assert model.events_applied == plain.events_applied == 4000 and events_per_s > 0
    rated = bool((stream.log.kind == RATING).any())
    for _, _, label, parent in PHASES:
        ran = rated or not label.startswith("model: rating")  # predictions run for rating events only
        assert (phases[label] > 0) == ran, label
        if parent is not None:  # nested inside its parent's time
            inside = (parent,) if isinstance(parent, str) else parent
            assert phases[label] < sum(phases[p] for p in inside), label
    assert sum(phases[label] for _, _, label, parent in PHASES if parent is None) < phases["whole replay"]


def test_report_holds_phases_and_a_floor_that_adds_up(tmp_path: Path) -> None:
    out = tmp_path / "profile.json"
    assert main(["--limit", "3000", "--report", str(out)]) == 0
    report = json.loads(out.read_text())
    floor = report["floor_us_per_event"]
    parts = [value for label, value in floor.items() if not label.startswith("sum")]
    assert len(parts) == 6 and all(v > 0 for v in parts)  # the synthetic stream has a catalog: content on
    assert abs(sum(parts) - floor["sum (floor per event)"]) < 1e-9
    assert report["events"] == 3000 and report["phases_us_per_event"]["whole replay"] > 0
