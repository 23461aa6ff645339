"""The event contract of the `interactions` and `items` topics, and its validation.

Raw Kafka record values (bytes) go in; a validated event dict or a `Rejection` with a precise reason
code comes out. Nothing here raises on bad input, so a malformed payload can never kill the worker.

>>> parse_interaction(b'{"user_id": 7, "item_id": "i1", "type": "rating", "value": 4, "ts": 10}')
{'user_id': '7', 'item_id': 'i1', 'type': 'rating', 'value': 4.0, 'ts': 10.0, 'event_id': None}
>>> parse_interaction(b'{"user_id": "u", "item_id": "i", "value": NaN}')
Rejection(reason='non_finite', message='value is not finite: nan')
>>> parse_interaction(b'\\xff').reason
'not_utf8'
"""

from __future__ import annotations

import json
import json.scanner
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from learners.base import EVENT_TYPE_CODE, EVENT_TYPES, Interactions, ItemMeta

MAX_MESSAGE_BYTES = 64 * 1024
MAX_ID_LENGTH = 256
MAX_TITLE_LENGTH = 1024
MAX_TAGS = 64
MAX_TAG_LENGTH = 64
MAX_ABS_VALUE = 1e6
MAX_TS = 4_102_444_800.0  # 2100-01-01: anything later is almost surely milliseconds or garbage
DEFAULT_TYPE = "click"
DEFAULT_VALUE = 1.0
_TYPE_LIST = ", ".join(EVENT_TYPES)

REASONS: tuple[str, ...] = (
    "not_utf8", "not_json", "not_object", "missing_field", "wrong_type", "non_finite", "out_of_range",
    "oversize", "empty_id", "unknown_type", "bad_tags", "bad_delta", "bad_user_state",
)


class Rejection(NamedTuple):
    """Why a payload was refused: `reason` is one of `REASONS`, `message` is for humans."""

    reason: str
    message: str


class FieldMap(NamedTuple):
    """How an `interactions` record names its fields, for topics written by others: the JSON names of
    the user, item, ts, value and type fields, the unit of ts (`ts_units_per_s`: 1000 for ms) and raw
    type values mapped to ours (`learners.base.EVENT_TYPES` pass through). Built from the same
    `--columns`, `--ts-unit` and `--types` as `streamrec replay --format csv` (`from_options`).

    >>> fields = FieldMap.from_options("user=visitorid,item=itemid,ts=timestamp,type=event", "ms",
    ...                                "addtocart=cart,transaction=purchase")
    >>> parse_interaction(b'{"visitorid": 7, "itemid": 9, "timestamp": 1433221332117, "event": "addtocart"}',
    ...                   fields)
    {'user_id': '7', 'item_id': '9', 'type': 'cart', 'value': 1.0, 'ts': 1433221332.117, 'event_id': None}
    >>> parse_interaction(b'{"visitorid": 7, "itemid": 9, "event": "wishlist"}', fields).message
    "event 'wishlist' is not mapped by --types nor one of view, click, cart, purchase, rating"
    """  # noqa: E501

    user: str = "user_id"
    item: str = "item_id"
    ts: str = "ts"
    value: str = "value"
    type: str = "type"
    ts_units_per_s: float = 1.0
    types: tuple[tuple[str, str], ...] = ()  # (raw, ours) pairs: a tuple keeps the map hashable

    @classmethod
    def from_options(cls, columns: str | dict[str, str] | None = None, ts_unit: str = "s",
                     types: str | dict[str, str] | None = None) -> FieldMap:
        """From `--columns role=NAME,...`, `--ts-unit s|ms`, `--types RAW=TYPE,...` (raises ValueError)."""
        from learners.csvlog import TS_UNITS, parse_columns, parse_types

        roles = parse_columns(columns) if isinstance(columns, str) and columns else dict(columns or {})
        mapped = parse_types(types) if isinstance(types, str) and types else dict(types or {})
        if ts_unit not in TS_UNITS:
            raise ValueError(f"--ts-unit must be one of {', '.join(TS_UNITS)}, got {ts_unit!r}")
        names = {"user": "user_id", "item": "item_id", "ts": "ts", "value": "value", "type": "type", **roles}
        made = cls(names["user"], names["item"], names["ts"], names["value"], names["type"],
                   float(TS_UNITS[ts_unit]), tuple(sorted(mapped.items())))
        return DEFAULT_FIELDS if made == DEFAULT_FIELDS else made  # the default's own fast path


DEFAULT_FIELDS = FieldMap()


class _Reject(Exception):  # noqa: N818 - internal control flow, never escapes this module
    """Raised as `_Reject(reason, message)`: no Python-level __init__, the arguments are the
    `Rejection` (a malformed record costs the worker little, so a flood cannot starve good events)."""

    @property
    def rejection(self) -> Rejection:
        return _new_tuple(Rejection, self.args)


_new_tuple = tuple.__new__  # builds a NamedTuple from a tuple without its Python-level __new__


_decoder = json.JSONDecoder()
_decode = _decoder.decode
_scan = json.scanner.make_scanner(_decoder)  # the C scanner: one value, no wrapper (the hot path)
_JSON_SPACE = " \t\n\r"


def _load_object(raw: bytes | bytearray | memoryview | str | None) -> dict[str, Any]:
    if raw is None:
        raise _Reject("not_json", "empty record value (tombstone)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise _Reject("oversize", f"message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    kind = type(raw)
    try:
        text = raw.decode("utf-8") if kind is bytes else raw if kind is str else bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Reject("not_utf8", f"value is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        try:
            obj, end = _scan(text, 0)
        except StopIteration:  # leading whitespace, or no JSON value at all: the slow path says which
            obj, end = _decode(text), len(text)
        if end != len(text) and text[end:].strip(_JSON_SPACE):
            _decode(text)  # raises "Extra data" with the position
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, int digit limit, deep nesting
        raise _Reject("not_json", f"value is not JSON: {str(exc)[:200]}") from None
    if type(obj) is not dict:
        raise _Reject("not_object", f"value is a JSON {_json_type(obj)}, not an object")
    return obj


def _id(obj: dict[str, Any], name: str, required: bool = True) -> str | None:
    v = obj.get(name)
    if v is None:
        if required:
            raise _Reject("missing_field", f"{name} is missing")
        return None
    tv = type(v)
    if tv is str:
        s = v.strip()
        if not s:
            raise _Reject("empty_id", f"{name} is empty")
    elif tv is int:  # bool is a subclass of int: exact type check keeps True out
        s = str(v)
    else:
        raise _Reject("wrong_type", f"{name} must be a string or an integer, got {_json_type(v)}")
    if len(s) > MAX_ID_LENGTH:
        raise _Reject("oversize", f"{name} of {len(s)} characters exceeds {MAX_ID_LENGTH}")
    if not s.isascii():
        # JSON escapes such as "\ud800" decode to lone surrogates: valid JSON, but no UTF-8 can carry
        # them, so every list naming this id would fail to publish.
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            raise _Reject("not_utf8", f"{name} holds a lone surrogate (not encodable as UTF-8)") from None
    if "\x00" in s:  # checkpoints store ids as fixed-width strings, which end at NUL
        raise _Reject("wrong_type", f"{name} contains a NUL character")
    return s


def _number(obj: dict[str, Any], name: str, low: float, high: float) -> float | None:
    v = obj.get(name)
    if v is None:
        return None
    tv = type(v)
    if tv is float:
        f = v
    elif tv is int:
        try:
            f = float(v)
        except OverflowError:
            raise _Reject("out_of_range", f"{name} is too large") from None
    else:
        raise _Reject("wrong_type", f"{name} must be a number, got {_json_type(v)}")
    if not math.isfinite(f):
        raise _Reject("non_finite", f"{name} is not finite: {f}")
    if not low <= f <= high:
        hint = " (milliseconds? ts is epoch seconds)" if name == "ts" and f > high else ""
        raise _Reject("out_of_range", f"{name}={f:g} is outside [{low:g}, {high:g}]{hint}")
    return f


_JSON_TYPES = {bool: "boolean", str: "string", int: "integer", float: "number", list: "array",
               dict: "object", type(None): "null"}


def _json_type(v: Any) -> str:
    return _JSON_TYPES.get(type(v), type(v).__name__)


def _interaction(raw: Any, fields: FieldMap = DEFAULT_FIELDS
                 ) -> tuple[str, str, str, float, float | None, str | None]:
    """(user_id, item_id, type, value, ts, event_id) of a valid record; raises `_Reject`."""
    obj = _load_object(raw)
    if fields is not DEFAULT_FIELDS:
        return _mapped_interaction(obj, fields)
    user = _id(obj, "user_id")
    item = _id(obj, "item_id")
    event_id = _id(obj, "event_id", required=False)
    kind = obj.get("type", DEFAULT_TYPE)
    if type(kind) is not str:
        raise _Reject("wrong_type", f"type must be a string, got {_json_type(kind)}")
    if kind not in EVENT_TYPE_CODE:
        raise _Reject("unknown_type", f"type {kind[:40]!r} is not one of {_TYPE_LIST}")
    value = _number(obj, "value", -MAX_ABS_VALUE, MAX_ABS_VALUE)
    if value is None:
        if kind == "rating":
            raise _Reject("missing_field", "value is missing (a rating needs one)")
        value = DEFAULT_VALUE
    return user, item, kind, value, _number(obj, "ts", 0.0, MAX_TS), event_id


def _mapped_interaction(obj: dict[str, Any], fields: FieldMap
                        ) -> tuple[str, str, str, float, float | None, str | None]:
    """`_interaction` for a record whose fields are named by `fields` (errors name them too)."""
    user = _id(obj, fields.user)
    item = _id(obj, fields.item)
    event_id = _id(obj, "event_id", required=False)
    kind = obj.get(fields.type)
    if kind is None:
        kind = DEFAULT_TYPE
    elif type(kind) is not str:
        raise _Reject("wrong_type", f"{fields.type} must be a string, got {_json_type(kind)}")
    for raw, ours in fields.types:
        if kind == raw:
            kind = ours
            break
    else:
        if kind not in EVENT_TYPE_CODE:
            raise _Reject("unknown_type", f"{fields.type} {kind[:40]!r} is not mapped by --types nor one of "
                                          f"{_TYPE_LIST}")
    value = _number(obj, fields.value, -MAX_ABS_VALUE, MAX_ABS_VALUE)
    if value is None:
        if kind == "rating":
            raise _Reject("missing_field", f"{fields.value} is missing (a rating needs one)")
        value = DEFAULT_VALUE
    ts = _number(obj, fields.ts, 0.0, MAX_TS * fields.ts_units_per_s)
    return user, item, kind, value, None if ts is None else ts / fields.ts_units_per_s, event_id


def parse_interaction(raw: Any, fields: FieldMap = DEFAULT_FIELDS) -> dict[str, Any] | Rejection:
    """One `interactions` record value -> `{user_id, item_id, type, value, ts, event_id}` or a
    `Rejection`. Ids come back as str; `ts` and `event_id` are None when absent (the caller fills
    them from the Kafka record). `fields`: the record's own field names (`FieldMap`)."""
    try:
        user, item, kind, value, ts, event_id = _interaction(raw, fields)
    except _Reject as r:
        return r.rejection
    return {"user_id": user, "item_id": item, "type": kind, "value": value, "ts": ts, "event_id": event_id}


def parse_item(raw: Any) -> ItemMeta | Rejection:
    """One `items` record value (`{item_id, title, tags, ts}`) -> `ItemMeta` or a `Rejection`."""
    try:
        obj = _load_object(raw)
        item = _id(obj, "item_id")
        title = obj.get("title", "")
        if title is None:
            title = ""
        if type(title) is not str:
            raise _Reject("wrong_type", f"title must be a string, got {_json_type(title)}")
        if len(title) > MAX_TITLE_LENGTH:
            raise _Reject("oversize", f"title of {len(title)} characters exceeds {MAX_TITLE_LENGTH}")
        tags = obj.get("tags", [])
        if tags is None:
            tags = []
        if type(tags) is not list:
            raise _Reject("bad_tags", f"tags must be an array of strings, got {_json_type(tags)}")
        if len(tags) > MAX_TAGS:
            raise _Reject("bad_tags", f"{len(tags)} tags exceed {MAX_TAGS}")
        for tag in tags:
            if type(tag) is not str or not tag.strip() or len(tag) > MAX_TAG_LENGTH:
                raise _Reject("bad_tags", f"tag {str(tag)[:40]!r} is not a non-empty string of at most "
                                          f"{MAX_TAG_LENGTH} characters")
        ts = _number(obj, "ts", 0.0, MAX_TS)
        return ItemMeta(item_id=item, title=title, tags=tuple(t.strip() for t in tags), ts=ts or 0.0)
    except _Reject as r:
        return r.rejection


class ValidatedBatch(NamedTuple):
    """Result of `validate_interactions`: the good events as a columnar batch (in input order), the
    input positions they came from, and `(position, Rejection)` for every bad one."""

    batch: Interactions
    positions: np.ndarray
    rejects: list[tuple[int, Rejection]]


def validate_interactions(
    raws: Sequence[Any], record_ts: Sequence[float | None] | None = None,
    fallback_id: Callable[[int], str] | None = None, fields: FieldMap = DEFAULT_FIELDS,
) -> ValidatedBatch:
    """Validate a micro-batch of raw `interactions` values into an `Interactions` batch.

    `record_ts[i]` (the Kafka record time, seconds) stands in for a missing `ts`; `fallback_id(i)`
    (e.g. "topic:partition:offset") for a missing `event_id`; `fields` names the record's fields.

    >>> vb = validate_interactions([b'{"user_id":"u","item_id":"i"}', b'[]'], record_ts=[5.0], fallback_id="t:0:{}".format)
    >>> vb.batch.ts.tolist(), vb.batch.event_id.tolist(), vb.rejects
    ([5.0], ['t:0:0'], [(1, Rejection(reason='not_object', message='value is a JSON array, not an object'))])
    """  # noqa: E501
    n = len(raws)
    user: list[str] = []
    item: list[str] = []
    value: list[float] = []
    ts: list[float] = []
    kind: list[int] = []
    event_id: list[str] = []
    positions: list[int] = []
    rejects: list[tuple[int, Rejection]] = []
    codes = EVENT_TYPE_CODE
    for i in range(n):
        try:
            u, it, k, v, t, eid = _interaction(raws[i], fields)
        except _Reject as r:
            rejects.append((i, r.rejection))
            continue
        if t is None:
            t = float(record_ts[i]) if record_ts is not None and record_ts[i] is not None else 0.0
        if eid is None:
            eid = fallback_id(i) if fallback_id is not None else f"#{i}"
        user.append(u)
        item.append(it)
        value.append(v)
        ts.append(t)
        kind.append(codes[k])
        event_id.append(eid)
        positions.append(i)
    m = len(user)
    users = np.empty(m, dtype=object)
    users[:] = user
    items = np.empty(m, dtype=object)
    items[:] = item
    ids = np.empty(m, dtype=object)
    ids[:] = event_id
    batch = Interactions(
        user=users, item=items, value=np.asarray(value, dtype=np.float32),
        ts=np.asarray(ts, dtype=np.float64), kind=np.asarray(kind, dtype=np.uint8), event_id=ids,
    )
    return ValidatedBatch(batch, np.asarray(positions, dtype=np.int64), rejects)


def encode_interaction(event: dict[str, Any]) -> bytes:
    """Serialise one event for the `interactions` topic (compact JSON, UTF-8)."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
