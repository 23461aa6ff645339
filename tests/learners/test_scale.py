"""`bench.scale` at toy sizes: the report's keys and counts (no timing assertions: the targets are
reported, not asserted)."""

from __future__ import annotations

import json

import pytest

from bench.scale import SIZES, build_logs, main


def test_report_counts_items_candidates_and_both_rates(capsys: pytest.CaptureFixture[str]) -> None:
    events, small, large = 5000, 200, 5000
    assert main(["--events", str(events), "--small-items", str(small), "--large-items", str(large),
                 "--users", "500", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for size in SIZES:
        for key in ("events_per_s", "events_per_cpu_s", "candidates_per_event", "ranked_per_event", "n_items",
                    "peak_rss_mb", "evaluated"):
            assert report[f"{key}_{size}"] is not None and report[f"{key}_{size}"] > 0, (key, size)
        assert report[f"events_{size}"] == events  # only the suffix is counted
    assert report["n_items_small"] == small and report["n_items_large"] >= large
    assert report["warmup_events_small"] == small and report["warmup_events_large"] == large
    assert report["evaluated_small"] == report["evaluated_large"]  # same suffix, same evaluable events
    assert report["ranked_per_event_large"] > report["ranked_per_event_small"]  # ranked against the catalog
    assert report["ratio"] == pytest.approx(report["events_per_s_large"] / report["events_per_s_small"])


def test_fixed_width_and_repeats_give_medians(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--events", "2000", "--small-items", "100", "--large-items", "3000", "--users", "200",
                 "--width", "16", "--repeat", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["width"] == 16 and report["repeat"] == 2
    assert report["neighbour_width_small"] == report["neighbour_width_large"] == 16
    assert report["events_small"] == report["events_large"] == 2000


def test_the_suffix_is_shared_and_the_warm_ups_cover_each_catalog() -> None:
    suffix, warmups = build_logs(n_events=3000, small_items=100, large_items=1000, n_users=50, seed=1)
    assert len(suffix) == 3000 and set(suffix.item) <= {f"i{k}" for k in range(100)}
    assert sorted(warmups["small"].item, key=lambda x: int(x[1:])) == [f"i{k}" for k in range(100)]
    assert len(warmups["large"]) == len(set(warmups["large"].item)) == 1000
    for warmup in warmups.values():
        assert warmup.ts[-1] < suffix.ts[0] and (warmup.ts[1:] >= warmup.ts[:-1]).all()
        assert not set(warmup.user) & set(suffix.user)
