"""`streamrec replay` end to end on small generated logs (no broker)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.replay import build_model, replay
from learners.datasets import write_items_jsonl, write_jsonl
from learners.evaluate import PrequentialEvaluator
from learners.synthetic import generate
from stream.cli import main


def test_synthetic_demo_writes_report_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path, plot_path = tmp_path / "r.json", tmp_path / "r.png"
    code = main(["replay", "--limit", "3000", "--report", str(report_path), "--plot", str(plot_path),
                 "--no-deep", "--quiet", "--batch-size", "200"])  # the default learner, as in the README
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["events"] == 3000 and 0 < report["evaluated"] < 3000
    for key in ("events_per_s", "hr@10", "ndcg@10", "mrr", "auc", "coverage@10"):
        assert report[key] is not None and report[key] >= 0
    assert 0 <= report["hr@10"] <= 1 and report["ndcg@10"] <= report["hr@10"]
    assert len(report["series"]) == 15 and report["series"][-1]["events"] == 3000  # one per batch here
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = capsys.readouterr().out
    assert "HR@10" in out and "events/s" in out


def test_jsonl_replay_with_catalog_and_saved_state(tmp_path: Path) -> None:
    stream = generate(n_events=1500, seed=3)
    write_jsonl(tmp_path / "events.jsonl", stream.log)
    write_items_jsonl(tmp_path / "items.jsonl", stream.items)
    code = main(["replay", "--data", str(tmp_path / "events.jsonl"), "--report", str(tmp_path / "r.json"),
                 "--save-state", str(tmp_path / "state"), "--quiet", "--model", "trending"])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["format"] == "jsonl" and report["items_file"].endswith("items.jsonl")
    from stream.checkpoint import load_latest_checkpoint

    state, offsets, meta = load_latest_checkpoint(tmp_path / "state")
    assert offsets == {"replay:0": 1500} and meta["events"] == 1500
    assert state.meta  # the learner's own metadata travelled with it


def test_movielens_ratings_report_rmse_when_the_model_predicts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [f"{rng.integers(1, 30)}\t{rng.integers(1, 60)}\t{rng.integers(1, 6)}\t{1000 + k}"
            for k in range(800)]
    (tmp_path / "u.data").write_text("\n".join(rows) + "\n")
    log_args = ["replay", "--data", str(tmp_path / "u.data"), "--report", str(tmp_path / "r.json"), "--quiet",
                "--no-deep"]
    assert main(log_args) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["events"] == 800 and report["format"] == "movielens"
    model = build_model(type("Args", (), {"no_deep": True, "seed": 0})())
    if hasattr(model, "predict_many"):
        assert report["rmse"] is not None and report["rmse"] > 0


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "u.data").write_text("1\t2\tthree\t4\n")
    assert main(["replay", "--data", str(tmp_path / "u.data"), "--quiet"]) == 2
    assert "u.data:1" in capsys.readouterr().err
    assert main(["replay", "--data", str(tmp_path / "missing.txt"), "--quiet"]) == 2


def test_replay_function_is_deterministic() -> None:
    log = generate(n_events=2000, seed=9).log
    args = type("Args", (), {"no_deep": True, "seed": 0, "model": "trending"})()
    first, _ = replay(log, build_model(args), batch_size=128, evaluator=PrequentialEvaluator())
    second, _ = replay(log, build_model(args), batch_size=128, evaluator=PrequentialEvaluator())
    np.testing.assert_array_equal(first.ranks(), second.ranks())


def test_replay_takes_any_importable_learner_and_refuses_a_bad_spec(tmp_path: Path, capsys) -> None:
    stream = generate(n_events=1200, seed=5)
    write_jsonl(tmp_path / "events.jsonl", stream.log)
    code = main(["replay", "--data", str(tmp_path / "events.jsonl"), "--report", str(tmp_path / "r.json"),
                 "--quiet", "--model", "learners.sparse:SparseRecommender"])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model"] == "SparseRecommender" and report["evaluated"] > 0
    assert report["jit_s"] > 0  # the kernels were compiled (or loaded) before the timed loop
    assert report["model_n_items"] == len(set(stream.log.item.tolist())) and report["evicted_items"] == 0
    with pytest.raises(SystemExit):
        main(["replay", "--model", "no-such-model"])
    assert "not module:Class" in capsys.readouterr().err
