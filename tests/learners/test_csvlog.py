"""CSV and Parquet logs: default and mapped columns, ms timestamps, event types, quoting, errors, sniffing."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from learners.base import EVENT_TYPE_CODE, EVENT_TYPES
from learners.csvlog import log_digest, read_csv_log, read_parquet_log
from learners.datasets import (
    FORMATS,
    add_log_arguments,
    log_options,
    parse_columns,
    parse_types,
    read_log,
    sniff_format,
)

RETAILROCKET = (
    "timestamp,visitorid,event,itemid,transactionid\n"
    "1433221332117,257597,view,355908,\n"
    "1433224214164,992329,view,248676,\n"
    "1433221999827,257597,addtocart,355908,\n"
    "1433223236124,287857,transaction,5206,4000\n"
    "1433224214164,111,view,1,\n"
)


def kinds(log) -> list[str]:
    return [EVENT_TYPES[k] for k in log.kind.tolist()]


def test_default_columns_sorted_stably_with_values_and_types(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,ts,value,type\n"
                    "u1,i1,20,,click\n"
                    "u2,i2,10,4.5,rating\n"
                    "u3,i1,20,2,\n"
                    "u1,i3,15,1,purchase\n")
    log = read_log(path)
    assert sniff_format(path) == "csv" and "csv" in FORMATS and "parquet" in FORMATS
    assert log.user.tolist() == ["u2", "u1", "u1", "u3"]  # ties (ts 20) keep file order
    assert log.item.tolist() == ["i2", "i3", "i1", "i1"]
    assert log.ts.dtype == np.float64 and log.ts.tolist() == [10.0, 15.0, 20.0, 20.0]
    assert log.value.dtype == np.float32 and log.value.tolist() == [4.5, 1.0, 1.0, 2.0]  # empty value: 1
    assert kinds(log) == ["rating", "purchase", "click", "click"]  # empty type: click
    assert log.event_id is None
    assert all(type(u) is str for u in log.user)


def test_optional_columns_absent_and_columns_in_any_order(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("extra,ts,item_id,user_id\nx,2,i9,u9\ny,1,i8,u8\n")
    log = read_log(path, "csv")
    assert log.user.tolist() == ["u8", "u9"] and log.value.tolist() == [1.0, 1.0]
    assert kinds(log) == ["click", "click"]


def test_ids_stay_strings_and_share_the_vocabulary(tmp_path: Path) -> None:
    path = tmp_path / "ids.csv"
    path.write_text("user_id,item_id,ts\n007,1.0,1\n7, 1e3 ,2\n007,0x1,3\n")
    log = read_log(path)
    assert log.user.tolist() == ["007", "7", "007"]  # never parsed as numbers; whitespace stripped
    assert log.item.tolist() == ["1.0", "1e3", "0x1"]
    assert log.user[0] is log.user[2]  # vocab[codes]: one str object per distinct id


def test_retailrocket_columns_ms_and_type_mapping(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(RETAILROCKET)
    columns = parse_columns("user=visitorid,item=itemid,ts=timestamp,type=event")
    types = parse_types("addtocart=cart,transaction=purchase")
    log = read_log(path, "csv", columns=columns, ts_unit="ms", types=types)
    assert log.user.tolist() == ["257597", "257597", "287857", "992329", "111"]
    assert log.item.tolist() == ["355908", "355908", "5206", "248676", "1"]
    np.testing.assert_allclose(log.ts, [1433221332.117, 1433221999.827, 1433223236.124, 1433224214.164,
                                        1433224214.164])
    assert kinds(log) == ["view", "cart", "purchase", "view", "view"]
    with pytest.raises(ValueError, match=r"events\.csv:4: unmapped event type 'addtocart'"):
        read_log(path, "csv", columns=columns, ts_unit="ms")
    with pytest.raises(ValueError, match=r"events\.csv:1: no column 'user_id' for user"):
        read_log(path, "csv")


def test_command_line_options(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_log_arguments(parser)
    args = parser.parse_args(["--columns", "user=visitorid,item=itemid,ts=timestamp,type=event",
                              "--ts-unit", "ms", "--types", "addtocart=cart,transaction=purchase"])
    options = log_options(args)
    assert options == {"columns": {"user": "visitorid", "item": "itemid", "ts": "timestamp", "type": "event"},
                       "ts_unit": "ms", "types": {"addtocart": "cart", "transaction": "purchase"}}
    path = tmp_path / "rr.csv"
    path.write_text(RETAILROCKET)
    assert len(read_log(path, **options)) == 5
    assert log_options(parser.parse_args([])) == {"columns": None, "ts_unit": "s", "types": None}
    with pytest.raises(SystemExit):
        parser.parse_args(["--types", "addtocart=basket"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--ts-unit", "us"])


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_columns, "user", "expected KEY=VALUE"),
        (parse_columns, "user=a,,item=b", "expected KEY=VALUE"),
        (parse_columns, "user=", "expected KEY=VALUE"),
        (parse_columns, "visitor=a", "unknown role 'visitor'"),
        (parse_columns, "user=a,user=b", "given twice"),
        (parse_types, "addtocart", "expected KEY=VALUE"),
        (parse_types, "addtocart=basket", "unknown event type 'basket'"),
        (parse_types, "a=view,a=click", "mapped twice"),
    ],
)
def test_bad_option_syntax(parse, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_quoted_fields_rfc4180(tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    path.write_text('user_id,item_id,ts,type\n'
                    '"u,1","say ""hi""",1,"click"\n'
                    '"u\n2",i2,2,view\n'
                    '\n'
                    'u3,"i3",3,cart\n')
    log = read_log(path)
    assert log.user.tolist() == ["u,1", "u\n2", "u3"]
    assert log.item.tolist() == ['say "hi"', "i2", "i3"]
    assert kinds(log) == ["click", "view", "cart"]
    # a record spanning two lines and a blank line: a later bad row still gets its own line number
    path.write_text(path.read_text() + "u4,,4,view\n")
    with pytest.raises(ValueError, match=r"quoted\.csv:7: empty item id"):
        read_log(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("u1,i1,1\nu2,i2\n", r":3: expected 3 fields, got 2"),
        ("u1,i1,1\nu2,i2,3,4\n", r":3: expected 3 fields, got 4"),
        ("u1,i1,1\nu2,i2,soon\n", r":3: ts is not a number: 'soon'"),
        ("u1,i1,1\nu2,i2,\n", r":3: missing ts"),
        ("u1,i1,1\nu2,i2,inf\n", r":3: ts is not finite"),
        ("u1,i1,nan\n", r":2: ts is not finite"),
        ("u1,i1,1\n,i2,2\n", r":3: empty user id"),
        ("u1,i1,1\nu2,  ,2\n", r":3: empty item id"),
    ],
)
def test_bad_rows_name_their_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("user_id,item_id,ts\n" + body)
    with pytest.raises(ValueError, match=r"bad\.csv" + message):
        read_log(path)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("u1,i1,1,1,view\nu2,i2,2,lots,view\n", r":3: value is not a number: 'lots'"),
        ("u1,i1,1,1,view\nu2,i2,2,-inf,view\n", r":3: value is not finite"),
        ("u1,i1,1,1,view\nu2,i2,2,1e300,view\n", r":3: value is out of the float32 range"),
        ("u1,i1,1,1,view\nu2,i2,2,1,like\nu3,i3,0,1,\n", r":3: unmapped event type 'like'"),
        ("u1,i1,5,1,view\nu2,i2,2,x,view\nu3,,1,1,view\n", r":3: value is not a number"),
        ("u1,i1,5,1,view\nu2,i2,2,1,like\nu3,,1,1,view\n", r":3: unmapped event type"),  # the first one
    ],
)
def test_bad_values_and_types_name_their_line(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("user_id,item_id,ts,value,type\n" + body)
    with pytest.raises(ValueError, match=r"bad\.csv" + message):
        read_log(path)


def test_header_problems(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("")
    with pytest.raises(ValueError, match=r"h\.csv:1: expected a header"):
        read_log(path, "csv")
    path.write_text("user_id,item_id,ts\n")
    assert len(read_log(path, "csv")) == 0
    path.write_text("\ufeffuser_id,item_id,ts\nu,i,1\n", encoding="utf-8")  # a byte order mark
    assert read_log(path).user.tolist() == ["u"] and sniff_format(path) == "csv"
    path.write_text("user_id,item_id,ts\nu,i,1\n")
    with pytest.raises(ValueError, match=r"no column 'event' for type"):
        read_log(path, "csv", columns={"type": "event"})
    with pytest.raises(ValueError, match="ts_unit"):
        read_csv_log(path, ts_unit="us")


def test_parquet_round_trip_and_native_types(tmp_path: Path) -> None:
    csv_path = tmp_path / "rr.csv"
    csv_path.write_text(RETAILROCKET)
    options = {"columns": parse_columns("user=visitorid,item=itemid,ts=timestamp,type=event"),
               "ts_unit": "ms", "types": parse_types("addtocart=cart,transaction=purchase")}
    from_csv = read_log(csv_path, **options)
    table = pa.table({
        "timestamp": pa.array([1433221332117, 1433224214164, 1433221999827, 1433223236124, 1433224214164]),
        "visitorid": pa.array([257597, 992329, 257597, 287857, 111]),  # integer ids become strings
        "event": pa.array(["view", "view", "addtocart", "transaction", "view"]).dictionary_encode(),
        "itemid": pa.array(["355908", "248676", "355908", "5206", "1"]),
    })
    path = tmp_path / "rr.parquet"
    pq.write_table(table, path)
    assert sniff_format(path) == "parquet"
    log = read_log(path, **options)
    assert log.user.tolist() == from_csv.user.tolist() and log.item.tolist() == from_csv.item.tolist()
    np.testing.assert_allclose(log.ts, from_csv.ts)
    assert log.kind.tolist() == from_csv.kind.tolist() and log.value.tolist() == from_csv.value.tolist()

    # default columns, a timestamp-typed ts (its own unit wins), values; no suffix: sniffed by magic
    stamps = pa.array([2_000_000, 1_000_000], pa.timestamp("us"))
    native = pa.table({"user_id": ["a", "b"], "item_id": ["x", "y"], "ts": stamps, "value": [3.0, None]})
    bare = tmp_path / "native"
    pq.write_table(native, bare)
    assert sniff_format(bare) == "parquet"
    log = read_parquet_log(bare)
    assert log.user.tolist() == ["b", "a"] and log.ts.tolist() == [1.0, 2.0]
    assert log.value.tolist() == [1.0, 3.0]

    bad = pa.table({"user_id": ["a", "b", ""], "item_id": ["x", "y", "z"], "ts": [1.0, 2.0, 3.0]})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad\.parquet: row 3: empty user id"):
        read_log(tmp_path / "bad.parquet")
    words = pa.table({"user_id": ["a", "b"], "item_id": ["x", "y"], "ts": ["1", "later"]})
    pq.write_table(words, tmp_path / "words.parquet")
    with pytest.raises(ValueError, match=r"words\.parquet: row 2: ts is not a number: 'later'"):
        read_log(tmp_path / "words.parquet")
    with pytest.raises(ValueError, match=r"rr\.parquet: no column 'user_id' for user"):
        read_log(tmp_path / "rr.parquet")


def test_sniffing(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.5,10\n")
    assert sniff_format(tmp_path / "ratings.csv") == "movielens"
    (tmp_path / "rr.csv").write_text(RETAILROCKET)
    assert sniff_format(tmp_path / "rr.csv") == "csv"
    (tmp_path / "log.txt").write_text("user_id,item_id,ts\nu,i,1\n")
    assert sniff_format(tmp_path / "log.txt") == "csv"  # a comma-separated header, whatever the suffix
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")
    assert sniff_format(tmp_path / "u.data") == "movielens"


def test_log_digest_is_deterministic_and_depends_on_options(tmp_path: Path) -> None:
    path = tmp_path / "rr.csv"
    path.write_text(RETAILROCKET)
    copy = tmp_path / "copy.csv"
    copy.write_bytes(path.read_bytes())
    assert log_digest(path) == log_digest(copy) and len(log_digest(path)) == 16
    assert log_digest(path, ts_unit="ms") != log_digest(path)
    copy.write_text(RETAILROCKET + "1,2,view,3,\n")
    assert log_digest(copy) != log_digest(path)


def test_a_larger_file_reads_columnar(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 50_000
    users, items = rng.integers(0, 500, n), rng.integers(0, 2000, n)
    ts = rng.integers(0, 10_000, n)
    kind = np.array(["view", "addtocart", "transaction"])[rng.integers(0, 3, n)]
    lines = [f"{t},{u},{k},{i}" for t, u, k, i in zip(ts, users, kind, items, strict=True)]
    path = tmp_path / "big.csv"
    path.write_text("timestamp,visitorid,event,itemid\n" + "\n".join(lines) + "\n")
    log = read_log(path, columns=parse_columns("user=visitorid,item=itemid,ts=timestamp,type=event"),
                   types=parse_types("addtocart=cart,transaction=purchase"))
    order = np.argsort(ts, kind="stable")
    assert log.user.tolist() == [str(u) for u in users[order]]
    assert log.ts.tolist() == ts[order].astype(float).tolist()
    expected = {"view": "view", "addtocart": "cart", "transaction": "purchase"}
    assert log.kind.tolist() == [EVENT_TYPE_CODE[expected[k]] for k in kind[order]]
