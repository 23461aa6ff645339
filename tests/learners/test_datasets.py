"""Log and catalog readers: formats, time order, deterministic event ids, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from learners.base import EVENT_TYPE_CODE
from learners.datasets import read_items, read_log, sniff_format, write_items_jsonl, write_jsonl
from learners.synthetic import generate

SHARED = Path(__file__).resolve().parents[2] / "../shared/data"


def test_movielens_u_data_sorted_stably_with_ratings(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("1\t10\t4\t200\n2\t11\t5\t100\n3\t12\t1\t200\n\n")
    log = read_log(path, "movielens")
    assert log.user.tolist() == ["2", "1", "3"]  # ties (ts 200) keep file order
    assert log.value.tolist() == [5.0, 4.0, 1.0]
    assert set(log.kind.tolist()) == {EVENT_TYPE_CODE["rating"]}
    assert log.event_id is not None and len(set(log.event_id.tolist())) == 3
    again = read_log(path, "movielens")
    assert again.event_id.tolist() == log.event_id.tolist()  # same log, same ids
    assert sniff_format(path) == "movielens"


def test_movielens_ratings_csv(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759100\n")
    log = read_log(path)
    assert log.item.tolist() == ["1029", "31"] and log.value.tolist() == [3.0, 2.5]
    assert read_log(tmp_path, "movielens").item.tolist() == ["1029", "31"]  # a folder works too


def test_yoochoose_folder_train_then_test(tmp_path: Path) -> None:
    header = "SessionId\tItemId\tTime\n"
    (tmp_path / "x_train_full.txt").write_text(header + "1\t100\t10.5\n1\t101\t11.0\n")
    (tmp_path / "x_test.txt").write_text(header + "2\t100\t10.5\n")
    log = read_log(tmp_path, "yoochoose")
    assert log.user.tolist() == ["1", "2", "1"]  # equal times: train_full before test
    assert log.value.tolist() == [1.0, 1.0, 1.0]
    assert set(log.kind.tolist()) == {EVENT_TYPE_CODE["click"]}
    assert sniff_format(tmp_path) == "yoochoose"
    assert len(set(log.event_id.tolist())) == 3


def test_jsonl_round_trip_keeps_event_ids(tmp_path: Path) -> None:
    stream = generate(n_events=300, seed=2)
    path = tmp_path / "events.jsonl"
    write_jsonl(path, stream.log)
    log = read_log(path)
    assert log.event_id.tolist() == stream.log.event_id.tolist()
    assert log.user.tolist() == stream.log.user.tolist()
    np.testing.assert_allclose(log.ts, stream.log.ts)
    items_path = tmp_path / "items.jsonl"
    write_items_jsonl(items_path, stream.items)
    assert read_items(items_path) == stream.items


def test_jsonl_without_event_id_gets_a_deterministic_one(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(json.dumps({"user_id": 7, "item_id": "a", "ts": 3}) + "\n")
    first, second = read_log(path), read_log(path)
    assert first.user.tolist() == ["7"] and first.kind.tolist() == [EVENT_TYPE_CODE["click"]]
    assert first.event_id.tolist() == second.event_id.tolist() and len(first.event_id[0]) == 16


@pytest.mark.parametrize(
    ("name", "text", "fmt", "message"),
    [
        ("u.data", "1\t2\t3\t4\n1\t2\t3\n", "movielens", r"u\.data:2: expected 4 fields"),
        ("u.data", "1\t2\tx\t4\n", "movielens", r"u\.data:1: rating is not a number"),
        ("r.csv", "userId,movieId,rating,timestamp\n1,2,3\n", "movielens", r"r\.csv:2"),
        ("y.txt", "Session\tItem\tTime\n", "yoochoose", r"y\.txt:1: expected the TAB-separated header"),
        ("y.txt", "SessionId\tItemId\tTime\n1\t2\tnope\n", "yoochoose", r"y\.txt:2: Time is not a number"),
        ("e.jsonl", '{"user_id": 1, "item_id": 2, "ts": 1}\n{oops\n', "jsonl", r"e\.jsonl:2: invalid JSON"),
        ("e.jsonl", '{"user_id": 1, "ts": 1}\n', "jsonl", r"e\.jsonl:1: missing field 'item_id'"),
        ("e.jsonl", '{"user_id": 1, "item_id": 2, "ts": 1, "type": "like"}\n', "jsonl", r"e\.jsonl:1: type"),
        ("e.jsonl", "[1, 2]\n", "jsonl", r"e\.jsonl:1: expected a JSON object"),
    ],
)
def test_malformed_input_names_file_and_line(
    tmp_path: Path, name: str, text: str, fmt: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_log(path, fmt)


def test_missing_path_and_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        read_log(tmp_path / "nope.txt", "movielens")
    (tmp_path / "a.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="unknown log format"):
        read_log(tmp_path / "a.txt", "xml")
    with pytest.raises(ValueError, match="cannot read as Parquet"):
        read_log(tmp_path / "a.txt", "parquet")
    with pytest.raises(ValueError, match="apply to csv and parquet"):
        read_log(tmp_path / "a.txt", "movielens", ts_unit="ms")
    with pytest.raises(ValueError, match="cannot tell"):
        sniff_format(tmp_path / "a.txt")


def test_movielens_catalogs(tmp_path: Path) -> None:
    flags = ["0"] * 19
    flags[1] = flags[15] = "1"  # Action, Sci-Fi
    (tmp_path / "u.item").write_bytes(
        ("7|Caf\xe9 Society (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n").encode("latin-1"))
    (item,) = read_items(tmp_path / "u.item")
    assert item.item_id == "7" and item.title == "Caf\xe9 Society (1995)"
    assert item.tags == ("Action", "Sci-Fi", "year:1995", "decade:1990s")
    (tmp_path / "movies.csv").write_text('movieId,title,genres\n1,"Toy Story, The (1995)",Animation|Comedy\n')
    (movie,) = read_items(tmp_path / "movies.csv")
    assert movie.title == "Toy Story, The (1995)" and movie.tags[:2] == ("Animation", "Comedy")
    (tmp_path / "bad.item").write_text("1|x|y\n")
    with pytest.raises(ValueError, match=r"bad\.item:1"):
        read_items(tmp_path / "bad.item")


@pytest.mark.skipif(not (SHARED / "ml-100k/u.data").exists(), reason="ml-100k not available")
def test_real_movielens_100k() -> None:
    log = read_log(SHARED / "ml-100k/u.data", "movielens")
    assert len(log) == 100_000 and len(set(log.user.tolist())) == 943
    assert bool(np.all(np.diff(log.ts) >= 0))
    items = read_items(SHARED / "ml-100k/u.item")
    assert len(items) == 1682 and items[0].title == "Toy Story (1995)"


@pytest.mark.skipif(not (SHARED / "yoochoose-clicks-100k").exists(), reason="yoochoose sample not available")
def test_real_yoochoose_sample() -> None:
    log = read_log(SHARED / "yoochoose-clicks-100k", "yoochoose")
    assert len(log) == 83_846 and len(set(log.item.tolist())) == 2933
    assert bool(np.all(np.diff(log.ts) >= 0))
