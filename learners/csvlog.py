"""Columnar readers for CSV and Parquet interaction logs (pyarrow), with column and event-type mappings.

A CSV log has a header line (RFC 4180: fields may be quoted, with `""` for a quote and line breaks
inside quotes) and the columns `user_id,item_id,ts[,value][,type]` by default, in any order; extra
columns are ignored. Other names are given by a mapping of roles to columns, e.g.
`{"user": "visitorid", "item": "itemid", "ts": "timestamp", "type": "event"}` (roles not named keep
their default column name; `value` and `type` are optional). `ts` is epoch seconds, or milliseconds
with `ts_unit="ms"`. Type values that are one of `learners.base.EVENT_TYPES` pass through, others are
mapped by `types` (e.g. `{"addtocart": "cart", "transaction": "purchase"}`); an empty type is a
click and an empty or absent value is 1.0. A Parquet log has the same columns (ids may be integers;
a timestamp-typed `ts` column is converted with its own unit).

The file is parsed by pyarrow in parallel with every id read as a string, ids are dictionary-encoded
and the `Interactions` id arrays are built as `vocab[codes]` (object arrays sharing the vocabulary's
`str` objects), then stably sorted by time. Checks are vectorised; only when one fails is the file
scanned again to name the first bad line (1-based, the header is line 1). `event_id` is None: a
producer derives ids from `log_digest` and the position of each event in time order.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
>>> _ = path.write_text("timestamp,visitorid,event,itemid\\n"
...                     "2000,7,addtocart,\\"42\\"\\n1000,7,view,41\\n")
>>> log = read_csv_log(path, columns=parse_columns("user=visitorid,item=itemid,ts=timestamp,type=event"),
...                    ts_unit="ms", types=parse_types("addtocart=cart"))
>>> log.user.tolist(), log.item.tolist(), log.ts.tolist(), log.kind.tolist(), log.value.tolist()
(['7', '7'], ['41', '42'], [1.0, 2.0], [0, 2], [1.0, 1.0])
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from learners.base import EVENT_TYPE_CODE, EVENT_TYPES, Interactions

ROLES: tuple[str, ...] = ("user", "item", "ts", "value", "type")
REQUIRED_ROLES: tuple[str, ...] = ("user", "item", "ts")
DEFAULT_COLUMNS: dict[str, str] = {"user": "user_id", "item": "item_id", "ts": "ts", "value": "value",
                                   "type": "type"}
TS_UNITS: dict[str, float] = {"s": 1.0, "ms": 1000.0}
_BLOCK = 16 << 20  # pyarrow CSV block size: fewer, larger chunks


def _pairs(text: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"{what}: expected KEY=VALUE pairs separated by commas, got {part.strip()!r}")
        pairs.append((key, value))
    return pairs


def parse_columns(text: str) -> dict[str, str]:
    """Parse a column mapping `role=COLUMN,...` (roles: user, item, ts, value, type).

    >>> parse_columns("user=visitorid,item=itemid,ts=timestamp,type=event")
    {'user': 'visitorid', 'item': 'itemid', 'ts': 'timestamp', 'type': 'event'}
    """
    out: dict[str, str] = {}
    for role, column in _pairs(text, "--columns"):
        if role not in ROLES:
            raise ValueError(f"--columns: unknown role {role!r}: expected one of {', '.join(ROLES)}")
        if role in out:
            raise ValueError(f"--columns: role {role!r} given twice")
        out[role] = column
    return out


def parse_types(text: str) -> dict[str, str]:
    """Parse an event-type mapping `RAW=TYPE,...` whose targets are our event types.

    >>> parse_types("addtocart=cart,transaction=purchase")
    {'addtocart': 'cart', 'transaction': 'purchase'}
    """
    out: dict[str, str] = {}
    for raw, target in _pairs(text, "--types"):
        if target not in EVENT_TYPE_CODE:
            raise ValueError(f"--types: unknown event type {target!r} for {raw!r}: "
                             f"expected one of {', '.join(EVENT_TYPES)}")
        if raw in out:
            raise ValueError(f"--types: {raw!r} mapped twice")
        out[raw] = target
    return out


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = parse.__name__
    return convert


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """Add `--columns`, `--ts-unit` and `--types` (the csv/parquet reading options) to a parser."""
    parser.add_argument("--columns", type=_argparse_type(parse_columns), metavar="ROLE=COL,...",
                        help="csv/parquet column names, e.g. user=visitorid,item=itemid,ts=timestamp,"
                             "type=event (default columns: user_id,item_id,ts[,value][,type])")
    parser.add_argument("--ts-unit", choices=sorted(TS_UNITS), default="s",
                        help="unit of the csv/parquet ts column: s (default) or ms")
    parser.add_argument("--types", type=_argparse_type(parse_types), metavar="RAW=TYPE,...",
                        help="map raw event types to view|click|cart|purchase|rating, "
                             "e.g. addtocart=cart,transaction=purchase")


def log_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `read_log` given by `add_log_arguments`' flags.

    >>> log_options(argparse.Namespace(columns="user=visitorid", ts_unit="ms", types=None))
    {'columns': {'user': 'visitorid'}, 'ts_unit': 'ms', 'types': None}
    """
    columns = getattr(args, "columns", None)
    types = getattr(args, "types", None)
    return {
        "columns": parse_columns(columns) if isinstance(columns, str) else columns,
        "ts_unit": getattr(args, "ts_unit", None) or "s",
        "types": parse_types(types) if isinstance(types, str) else types,
    }


def _check_options(columns: Mapping[str, str] | None, ts_unit: str, types: Mapping[str, str] | None
                   ) -> tuple[dict[str, str], float, dict[str, str]]:
    if ts_unit not in TS_UNITS:
        raise ValueError(f"ts_unit must be one of {', '.join(TS_UNITS)}, got {ts_unit!r}")
    columns = dict(columns or {})
    unknown = set(columns) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown column roles {sorted(unknown)}: expected {', '.join(ROLES)}")
    types = dict(types or {})
    for raw, target in types.items():
        if target not in EVENT_TYPE_CODE:
            raise ValueError(f"unknown event type {target!r} for {raw!r}: expected one of {EVENT_TYPES}")
    return columns, TS_UNITS[ts_unit], types


def _resolve(where: str, header: list[str], columns: dict[str, str]) -> dict[str, str]:
    """Role -> column name of the columns present; a required or explicitly named one must be there."""
    present = set(header)
    out = {}
    for role in ROLES:
        name = columns.get(role, DEFAULT_COLUMNS[role])
        if name in present:
            out[role] = name
        elif role in REQUIRED_ROLES or role in columns:
            raise ValueError(f"{where}: no column {name!r} for {role} "
                             f"(columns: {', '.join(header)}); map it with --columns {role}=COLUMN")
    return out


def log_digest(path: str | Path, columns: Mapping[str, str] | None = None, ts_unit: str = "s",
               types: Mapping[str, str] | None = None) -> str:
    """16 hex digits of blake2b over the file's bytes and the reading options: with an event's position
    in time order, a deterministic event id for logs that carry none."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 22):
            h.update(chunk)
    h.update(json.dumps([sorted((columns or {}).items()), ts_unit, sorted((types or {}).items())]).encode())
    return h.hexdigest()


# --- locating the first bad line (only after a vectorised check failed) ------------------------------

def _csv_records(path: Path):
    """(first line number, fields) of each non-empty record after the header, as pyarrow counts rows."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh)
        next(reader, None)
        line = reader.line_num
        for fields in reader:
            if fields:
                yield line + 1, fields
            line = reader.line_num


def _csv_line_of_row(path: Path, row: int) -> int:
    for n, (line, _) in enumerate(_csv_records(path)):
        if n == row:
            return line
    return row + 2


def _number(text: str) -> float | None:
    text = text.strip()
    if "_" in text:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def _csv_first_bad_record(path: Path, header: list[str], roles: dict[str, str]) -> str | None:
    """Mirror of pyarrow's parse and conversion rules, record by record: the first failure, or None."""
    index = {role: header.index(name) for role, name in roles.items()}
    try:
        for line, fields in _csv_records(path):
            if len(fields) != len(header):
                text = ",".join(fields)[:80]
                return f"{path}:{line}: expected {len(header)} fields, got {len(fields)}: {text!r}"
            raw = fields[index["ts"]]
            if raw.strip() and _number(raw) is None:
                return f"{path}:{line}: ts is not a number: {raw[:40]!r}"
            if "value" in index:
                raw = fields[index["value"]]
                if raw.strip() and _number(raw) is None:
                    return f"{path}:{line}: value is not a number: {raw[:40]!r}"
    except csv.Error as exc:
        return f"{path}: {exc}"
    return None


# --- columns to arrays -------------------------------------------------------------------------------

def _encode(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """(vocab, codes) of a string column: vocab an object array of str, stripped, codes int32/64."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    chunks = column.chunks
    if not chunks:
        return np.empty(0, dtype=object), np.empty(0, np.int32)
    dictionary = chunks[-1].dictionary
    if any(len(c.dictionary) != len(dictionary) for c in chunks):  # not one memo table: unify
        unified = pa.table({"c": column}).unify_dictionaries().column("c")
        chunks, dictionary = unified.chunks, unified.chunks[-1].dictionary
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in chunks])
    vocab = pc.utf8_trim_whitespace(dictionary).to_numpy(zero_copy_only=False)
    return vocab, codes


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _to_float(column: Any) -> tuple[np.ndarray, np.ndarray]:
    """(values float64 with NaN for nulls, null mask) of a numeric column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    column = pc.cast(column, pa.float64()) if column.type != pa.float64() else column
    null = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else None
    values = column.to_numpy() if column.null_count == 0 else column.fill_null(np.nan).to_numpy()
    return values, (null if null is not None else np.zeros(len(values), bool))


def _build(table: Any, roles: dict[str, str], scale: float, types: dict[str, str],
           locate: Callable[[int], str]) -> Interactions:
    """Validate the columns (vectorised) and build a time-ordered `Interactions`; `locate(row)` names a
    0-based data row in error messages ("path:LINE")."""
    n = table.num_rows
    problems: list[tuple[int, str]] = []  # (row, message): the earliest one is reported

    def found(row: int | None, message: Callable[[int], str]) -> None:
        if row is not None:
            problems.append((row, message(row)))

    # the hash-encoding of each string column is single-threaded in pyarrow and releases the GIL
    string_roles = [role for role in ("user", "item", "type") if role in roles]
    with ThreadPoolExecutor(len(string_roles)) as pool:
        encoded = dict(zip(string_roles, pool.map(lambda r: _encode(table.column(roles[r])), string_roles),
                           strict=True))
    user_vocab, user_codes = encoded["user"]
    item_vocab, item_codes = encoded["item"]
    for name, vocab, codes in (("user", user_vocab, user_codes), ("item", item_vocab, item_codes)):
        empty = np.flatnonzero(vocab == "")
        if len(empty):
            found(_first(np.isin(codes, empty)), lambda r, name=name: f"empty {name} id")

    ts, ts_null = _to_float(table.column(roles["ts"]))
    found(_first(ts_null), lambda r: "missing ts")
    found(_first(~ts_null & ~np.isfinite(ts)), lambda r: f"ts is not finite: {ts[r]}")

    if "value" in roles:
        value, value_null = _to_float(table.column(roles["value"]))
        found(_first(~value_null & ~np.isfinite(value)), lambda r: f"value is not finite: {value[r]}")
        if value_null.any():
            value = np.where(value_null, 1.0, value)
        with np.errstate(over="ignore"):
            value32 = value.astype(np.float32)
        found(_first(np.isfinite(value) & ~np.isfinite(value32)),
              lambda r: f"value is out of the float32 range: {value[r]}")
        value = value32
    else:
        value = np.ones(n, np.float32)

    if "type" in roles:
        raw_vocab, raw_codes = encoded["type"]
        lut = np.full(len(raw_vocab) + 1, -1, np.int16)
        for j, raw in enumerate(raw_vocab.tolist()):
            target = types.get(raw, raw if raw in EVENT_TYPE_CODE else ("click" if raw == "" else None))
            if target is not None:
                lut[j] = EVENT_TYPE_CODE[target]
        kind16 = lut[raw_codes]
        bad = _first(kind16 < 0)
        found(bad, lambda r: (f"unmapped event type {raw_vocab[raw_codes[r]]!r}: map it with --types "
                              f"{raw_vocab[raw_codes[r]]}=TYPE (TYPE one of {', '.join(EVENT_TYPES)})"))
        kind = kind16.astype(np.uint8)
    else:
        kind = np.full(n, EVENT_TYPE_CODE["click"], np.uint8)

    if problems:
        row, message = min(problems)
        raise ValueError(f"{locate(row)}: {message}")

    if scale != 1.0:
        ts = ts / scale
    if n > 1 and not bool((ts[1:] >= ts[:-1]).all()):
        order = np.argsort(ts, kind="stable")
        ts, value, kind = ts[order], value[order], kind[order]
        user_codes, item_codes = user_codes[order], item_codes[order]
    return Interactions(user=user_vocab[user_codes], item=item_vocab[item_codes], value=value,
                        ts=np.ascontiguousarray(ts, np.float64), kind=kind, event_id=None)


# --- readers -----------------------------------------------------------------------------------------

def read_csv_header(path: str | Path) -> list[str]:
    """The column names of a CSV file's header line."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh), None)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ValueError(f"{path}: cannot read the header: {exc}") from None
    if not header or not any(h.strip() for h in header):
        raise ValueError(f"{path}:1: expected a header line naming the columns")
    return [h.strip() for h in header]


def read_csv_log(path: str | Path, columns: Mapping[str, str] | None = None, ts_unit: str = "s",
                 types: Mapping[str, str] | None = None) -> Interactions:
    """Read a header CSV log into a time-ordered `Interactions` (see the module docstring).

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "s.csv"
    >>> _ = path.write_text("user_id,item_id,ts\\nu1,i1,20\\nu2,,10\\n")
    >>> read_csv_log(path)
    Traceback (most recent call last):
    ...
    ValueError: ...s.csv:3: empty item id
    """
    import pyarrow as pa
    import pyarrow.csv as pv

    path = Path(path)
    columns_, scale, types_ = _check_options(columns, ts_unit, types)
    header = read_csv_header(path)
    roles = _resolve(f"{path}:1", header, columns_)
    column_types = {roles["user"]: pa.string(), roles["item"]: pa.string(), roles["ts"]: pa.float64()}
    if "value" in roles:
        column_types[roles["value"]] = pa.float64()
    if "type" in roles:
        column_types[roles["type"]] = pa.string()
    try:
        table = pv.read_csv(
            path,
            read_options=pv.ReadOptions(block_size=_BLOCK, use_threads=True),
            parse_options=pv.ParseOptions(newlines_in_values=True),
            convert_options=pv.ConvertOptions(
                column_types=column_types, include_columns=sorted(set(roles.values())),
                null_values=[""], strings_can_be_null=False, quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeDecodeError) as exc:
        message = _csv_first_bad_record(path, header, roles)
        raise ValueError(message or f"{path}: {exc}") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read: {exc}") from None
    return _build(table, roles, scale, types_, lambda row: f"{path}:{_csv_line_of_row(path, row)}")


def read_parquet_log(path: str | Path, columns: Mapping[str, str] | None = None, ts_unit: str = "s",
                     types: Mapping[str, str] | None = None) -> Interactions:
    """Read a Parquet log (same columns and options as `read_csv_log`; errors name the 1-based row)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = Path(path)
    columns_, scale, types_ = _check_options(columns, ts_unit, types)
    try:
        schema = pq.read_schema(path)
        roles = _resolve(str(path), list(schema.names), columns_)
        table = pq.read_table(path, columns=sorted(set(roles.values())))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: cannot read as Parquet: {exc}") from None

    def locate(row: int) -> str:
        return f"{path}: row {row + 1}"

    def as_string(name: str) -> Any:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, col.type.value_type)
        return col if pa.types.is_string(col.type) or pa.types.is_large_string(col.type) \
            else pc.cast(col, pa.string())

    ts_col = table.column(roles["ts"])
    if pa.types.is_timestamp(ts_col.type):  # a real timestamp carries its own unit
        per_second = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[ts_col.type.unit]
        ts_col = pc.divide(pc.cast(pc.cast(ts_col, pa.int64()), pa.float64()), per_second)
        scale = 1.0
    fields = {roles["user"]: as_string(roles["user"]), roles["item"]: as_string(roles["item"])}
    for role in ("ts", "value"):
        if role in roles:
            col = ts_col if role == "ts" else table.column(roles[role])
            try:
                fields[roles[role]] = pc.cast(col, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                values = col.to_pylist()
                bad = next((j for j, v in enumerate(values) if v is not None and _number(str(v)) is None), 0)
                text = str(values[bad])[:40] if values else ""
                raise ValueError(f"{locate(bad)}: {role} is not a number: {text!r}") from None
    if "type" in roles:
        fields[roles["type"]] = as_string(roles["type"])
    return _build(pa.table(fields), roles, scale, types_, locate)
