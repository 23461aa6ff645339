"""Readers that turn interaction logs and item catalogs into time-ordered `Interactions`.

Formats: `movielens` (100K `u.data`, TAB `user item rating ts` without header, or the newer
`ratings.csv` with header `userId,movieId,rating,timestamp`), `yoochoose` (TAB with header
`SessionId ItemId Time`; a folder holding `*train_full*` then `*test*`, or one file; the session is
the user), `jsonl` (one `interactions`-contract object per line), and `csv` / `parquet` (columnar,
read by pyarrow in `learners.csvlog`: a header CSV `user_id,item_id,ts[,value][,type]` or a Parquet
file, other column names, a millisecond `ts` and raw event types mapped by `columns`, `ts_unit` and
`types`). Events are stable-sorted by time: ties keep file order. MovieLens and YOOCHOOSE events get
a deterministic `event_id` (a hash of the raw line and line number), so producing the same log twice
yields the same ids; jsonl keeps its own ids; csv and parquet logs leave `event_id` None (10M id
strings would cost more than the rest of the read) and the producer derives ids from
`log_digest` and the position in time order.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "u.data"
>>> _ = path.write_text("1\\t10\\t4\\t200\\n2\\t11\\t5\\t100\\n")
>>> log = read_log(path, "movielens")
>>> log.user.tolist(), log.item.tolist(), log.value.tolist(), log.ts.tolist()
(['2', '1'], ['11', '10'], [5.0, 4.0], [100.0, 200.0])
>>> sniff_format(path)
'movielens'
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from learners.base import EVENT_TYPE_CODE, EVENT_TYPES, Interactions, ItemMeta
from learners.csvlog import (
    add_log_arguments,
    log_digest,
    log_options,
    parse_columns,
    parse_types,
    read_csv_log,
    read_parquet_log,
)

__all__ = [
    "FORMATS", "add_log_arguments", "event_ids", "log_digest", "log_options", "parse_columns", "parse_types",
    "read_items", "read_log", "sniff_format", "sort_by_time", "write_items_jsonl", "write_jsonl",
]

FORMATS: tuple[str, ...] = ("movielens", "yoochoose", "jsonl", "csv", "parquet")
COLUMNAR_FORMATS: tuple[str, ...] = ("csv", "parquet")

MOVIELENS_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)
_YEAR = re.compile(r"\((\d{4})\)\s*$")


def event_ids(lines: Sequence[bytes], first_line: int = 1) -> np.ndarray:
    """Deterministic ids: blake2b (8 bytes, 16 hex) of each raw line and its 1-based line number."""
    return _line_ids(range(first_line, first_line + len(lines)), lines)


def _str_array(values: Sequence[bytes]) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = [v.decode() for v in values]
    return out


def _raw_lines(path: Path) -> list[bytes]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from exc
    return [line.rstrip(b"\r") for line in data.split(b"\n")]


def _floats(path: Path, column: Sequence[bytes], first_lines: Sequence[int], what: str) -> np.ndarray:
    try:
        return np.array(column, dtype=np.bytes_).astype(np.float64)
    except ValueError:
        for n, raw in zip(first_lines, column, strict=True):
            try:
                float(raw)
            except ValueError:
                raise ValueError(f"{path}:{n}: {what} is not a number: {raw[:40]!r}") from None
        raise


def _columnar(path: Path, lines: list[bytes], first: int, sep: bytes, n_fields: int):
    """Non-blank lines of a delimited file as (line numbers, raw lines, field columns)."""
    numbers = [n for n, line in enumerate(lines, first) if line.strip()]
    kept = [lines[n - first] for n in numbers]
    counts = np.fromiter((line.count(sep) for line in kept), np.int64, len(kept))
    bad = np.flatnonzero(counts != n_fields - 1)
    if len(bad):
        n, line = numbers[bad[0]], kept[bad[0]]
        raise ValueError(
            f"{path}:{n}: expected {n_fields} fields separated by {sep!r}, "
            f"got {counts[bad[0]] + 1}: {line[:80]!r}"
        )
    tokens = sep.join(kept).split(sep) if kept else []
    columns = [tokens[k::n_fields] for k in range(n_fields)]
    return numbers, kept, columns


def _line_ids(numbers: Sequence[int], lines: Sequence[bytes]) -> np.ndarray:
    out = np.empty(len(lines), dtype=object)
    out[:] = [hashlib.blake2b(b"%d\0%b" % (n, line), digest_size=8).hexdigest()
              for n, line in zip(numbers, lines, strict=True)]
    return out


def _read_movielens(path: Path) -> Interactions:
    lines = _raw_lines(path)
    header = lines[0].strip().lower() if lines else b""
    if header.startswith(b"userid"):
        if header.split(b",")[:4] != [b"userid", b"movieid", b"rating", b"timestamp"]:
            raise ValueError(f"{path}:1: expected header userId,movieId,rating,timestamp, got {lines[0]!r}")
        numbers, kept, cols = _columnar(path, lines[1:], 2, b",", 4)
    else:
        numbers, kept, cols = _columnar(path, lines, 1, b"\t", 4)
    rating = _floats(path, cols[2], numbers, "rating")
    ts = _floats(path, cols[3], numbers, "timestamp")
    ids = _line_ids(numbers, kept)
    return Interactions(
        user=_str_array([c.strip() for c in cols[0]]), item=_str_array([c.strip() for c in cols[1]]),
        value=rating.astype(np.float32), ts=ts, kind=np.full(len(kept), EVENT_TYPE_CODE["rating"], np.uint8),
        event_id=ids,
    )


def _yoochoose_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    train = sorted(path.glob("*train_full*.txt"))
    test = sorted(path.glob("*test*.txt"))
    files = train + [p for p in test if p not in train]
    if not files:
        raise ValueError(f"{path}: no *train_full*.txt or *test*.txt file in this folder")
    return files


def _read_yoochoose_file(path: Path) -> Interactions:
    lines = _raw_lines(path)
    if not lines or lines[0].strip().split(b"\t") != [b"SessionId", b"ItemId", b"Time"]:
        raise ValueError(f"{path}:1: expected the TAB-separated header 'SessionId ItemId Time'")
    numbers, kept, cols = _columnar(path, lines[1:], 2, b"\t", 3)
    ts = _floats(path, cols[2], numbers, "Time")
    ids = _line_ids(numbers, kept)
    n = len(kept)
    return Interactions(
        user=_str_array([c.strip() for c in cols[0]]), item=_str_array([c.strip() for c in cols[1]]),
        value=np.ones(n, np.float32), ts=ts, kind=np.full(n, EVENT_TYPE_CODE["click"], np.uint8),
        event_id=ids,
    )


def _json_objects(path: Path):
    """(line number, raw line, object) for each non-blank JSONL line, with clear errors."""
    for n, line in enumerate(_raw_lines(path), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{n}: invalid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield n, line, obj


def _read_jsonl(path: Path) -> Interactions:
    users, items, values, stamps, kinds, ids = [], [], [], [], [], []
    for n, line, obj in _json_objects(path):
        try:
            user, item, ts = obj["user_id"], obj["item_id"], float(obj["ts"])
            kind = obj.get("type", "click")
            value = float(obj.get("value", 1.0))
        except KeyError as exc:
            raise ValueError(f"{path}:{n}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{n}: bad value: {exc}") from None
        if kind not in EVENT_TYPE_CODE:
            raise ValueError(f"{path}:{n}: type must be one of {EVENT_TYPES}, got {kind!r}")
        if not np.isfinite(ts) or not np.isfinite(value):
            raise ValueError(f"{path}:{n}: ts and value must be finite numbers")
        if user is None or item is None or str(user) == "" or str(item) == "":
            raise ValueError(f"{path}:{n}: user_id and item_id must be non-empty")
        users.append(str(user))
        items.append(str(item))
        values.append(value)
        stamps.append(ts)
        kinds.append(EVENT_TYPE_CODE[kind])
        given = obj.get("event_id")
        ids.append(str(given) if given not in (None, "") else
                   hashlib.blake2b(b"%d\0%b" % (n, line), digest_size=8).hexdigest())
    return Interactions(
        user=np.array(users, dtype=object).reshape(-1), item=np.array(items, dtype=object).reshape(-1),
        value=np.array(values, np.float32), ts=np.array(stamps, np.float64),
        kind=np.array(kinds, np.uint8), event_id=np.array(ids, dtype=object).reshape(-1),
    )


def sort_by_time(log: Interactions) -> Interactions:
    """Stable sort by timestamp: events with equal times keep their order."""
    order = np.argsort(log.ts, kind="stable")
    return log[order]


def sniff_format(path: str | Path) -> str:
    """Guess the log format from a folder's file names or a file's first line."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.is_dir():
        if any(path.glob("*train_full*.txt")) or any(path.glob("*test*.txt")):
            return "yoochoose"
        for name in ("u.data", "ratings.csv"):
            if (path / name).exists():
                return "movielens"
        raise ValueError(f"{path}: cannot tell the log format of this folder; pass --format")
    with open(path, "rb") as fh:
        magic = fh.read(4)
        fh.seek(0)
        first = fh.readline().strip()
    if magic == b"PAR1" or path.suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    if first.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark
        first = first[3:]
    if first.startswith(b"{"):
        return "jsonl"
    if first.split(b"\t") == [b"SessionId", b"ItemId", b"Time"]:
        return "yoochoose"
    if first.lower().startswith(b"userid,movieid,") or len(first.split(b"\t")) == 4:
        return "movielens"
    if path.suffix.lower() == ".csv" or b"," in first:
        return "csv"
    raise ValueError(f"{path}:1: cannot tell the log format from {first[:80]!r}; pass --format")


def read_log(
    path: str | Path, fmt: str | None = None, columns: Mapping[str, str] | None = None, ts_unit: str = "s",
    types: Mapping[str, str] | None = None,
) -> Interactions:
    """Read a whole log into one time-ordered `Interactions` (ids as str).

    `columns` (role -> column name: user, item, ts, value, type), `ts_unit` ("s" or "ms") and `types`
    (raw type -> one of `EVENT_TYPES`) apply to the csv and parquet formats (`learners.csvlog`);
    `event_id` is set for the other formats and None for those two.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "events.csv"
    >>> _ = path.write_text("ts,user_id,item_id,type\\n5,u1,i1,transaction\\n3,u2,i1,view\\n")
    >>> log = read_log(path, types={"transaction": "purchase"})
    >>> log.user.tolist(), [EVENT_TYPES[k] for k in log.kind], log.event_id is None
    (['u2', 'u1'], ['view', 'purchase'], True)
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    fmt = fmt or sniff_format(path)
    if fmt not in COLUMNAR_FORMATS and (columns or types or ts_unit != "s"):
        raise ValueError(f"{path}: --columns, --ts-unit and --types apply to csv and parquet logs, "
                         f"not to {fmt}")
    if fmt == "csv":
        return read_csv_log(path, columns=columns, ts_unit=ts_unit, types=types)
    if fmt == "parquet":
        return read_parquet_log(path, columns=columns, ts_unit=ts_unit, types=types)
    if fmt == "movielens":
        if path.is_dir():
            path = path / "u.data" if (path / "u.data").exists() else path / "ratings.csv"
        log = _read_movielens(path)
    elif fmt == "yoochoose":
        log = Interactions.concat([_read_yoochoose_file(p) for p in _yoochoose_files(path)])
    elif fmt == "jsonl":
        log = _read_jsonl(path)
    else:
        raise ValueError(f"unknown log format {fmt!r}: expected one of {FORMATS}")
    return sort_by_time(log)


def _year_tags(title: str) -> tuple[str, ...]:
    match = _YEAR.search(title)
    if not match:
        return ()
    year = int(match.group(1))
    return (f"year:{year}", f"decade:{year // 10 * 10}s")


def _read_movielens_items(path: Path) -> list[ItemMeta]:
    out = []
    text = path.read_bytes().decode("latin-1")
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) != 5 + len(MOVIELENS_GENRES):
            raise ValueError(f"{path}:{n}: expected {5 + len(MOVIELENS_GENRES)} '|' fields, got {len(parts)}")
        flags = parts[5:]
        if any(f not in ("0", "1") for f in flags):
            raise ValueError(f"{path}:{n}: genre flags must be 0 or 1")
        genres = tuple(g for g, f in zip(MOVIELENS_GENRES, flags, strict=True) if f == "1")
        title = parts[1].strip()
        out.append(ItemMeta(item_id=parts[0].strip(), title=title, tags=genres + _year_tags(title)))
    return out


def _read_movies_csv(path: Path) -> list[ItemMeta]:
    out = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header[:3]] != ["movieid", "title", "genres"]:
            raise ValueError(f"{path}:1: expected header movieId,title,genres")
        for row in reader:
            if not row:
                continue
            if len(row) != 3:
                raise ValueError(f"{path}:{reader.line_num}: expected 3 fields, got {len(row)}")
            genres = tuple(g for g in row[2].split("|") if g and g != "(no genres listed)")
            title = row[1].strip()
            out.append(ItemMeta(item_id=row[0].strip(), title=title, tags=genres + _year_tags(title)))
    return out


def _read_items_jsonl(path: Path) -> list[ItemMeta]:
    out = []
    for n, _, obj in _json_objects(path):
        try:
            item = obj["item_id"]
            tags = obj.get("tags") or ()
            if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
                raise TypeError("tags must be a list of strings")
            meta = ItemMeta(item_id=str(item), title=str(obj.get("title") or ""), tags=tuple(tags),
                            ts=float(obj.get("ts", 0.0)))
        except KeyError as exc:
            raise ValueError(f"{path}:{n}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}:{n}: bad item: {exc}") from None
        if meta.item_id == "":
            raise ValueError(f"{path}:{n}: item_id must be non-empty")
        out.append(meta)
    return out


def read_items(path: str | Path) -> list[ItemMeta]:
    """Read an item catalog: MovieLens `u.item` or `movies.csv`, or JSONL `items`-contract lines."""
    path = Path(path)
    if path.is_dir():
        for name in ("u.item", "movies.csv", "items.jsonl"):
            if (path / name).exists():
                path = path / name
                break
        else:
            raise ValueError(f"{path}: no u.item, movies.csv or items.jsonl in this folder")
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    with open(path, "rb") as fh:
        first = fh.readline().strip()
    if first.startswith(b"{"):
        return _read_items_jsonl(path)
    if first.lower().startswith(b"movieid,"):
        return _read_movies_csv(path)
    if b"|" in first:
        return _read_movielens_items(path)
    raise ValueError(f"{path}:1: unknown item catalog format (expected u.item, movies.csv or JSONL)")


def write_jsonl(path: str | Path, log: Interactions, types: Sequence[str] = EVENT_TYPES) -> None:
    """Write events as `interactions`-contract JSON lines (the input of `read_log(path, "jsonl")`)."""
    ids = log.event_id if log.event_id is not None else event_ids(
        [f"{u}\t{i}\t{t!r}".encode() for u, i, t in zip(log.user, log.item, log.ts, strict=True)])
    with open(path, "w", encoding="utf-8") as fh:
        buf = io.StringIO()
        for eid, u, i, k, v, t in zip(ids, log.user, log.item, log.kind.tolist(), log.value.tolist(),
                                      log.ts.tolist(), strict=True):
            buf.write(json.dumps({"event_id": eid, "user_id": u, "item_id": i, "type": types[k],
                                  "value": v, "ts": t}))
            buf.write("\n")
        fh.write(buf.getvalue())


def write_items_jsonl(path: str | Path, items: Sequence[ItemMeta]) -> None:
    """Write a catalog as `items`-contract JSON lines (the input of `read_items`)."""
    with open(path, "w", encoding="utf-8") as fh:
        for meta in items:
            fh.write(json.dumps({"item_id": meta.item_id, "title": meta.title, "tags": list(meta.tags),
                                 "ts": meta.ts}) + "\n")
