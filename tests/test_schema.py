"""The `interactions` / `items` contract: every reject reason, normalisation and batch validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from learners.base import EVENT_TYPE_CODE, ItemMeta
from stream.schema import (
    DEFAULT_FIELDS,
    MAX_ID_LENGTH,
    MAX_MESSAGE_BYTES,
    REASONS,
    FieldMap,
    Rejection,
    encode_interaction,
    parse_interaction,
    parse_item,
    validate_interactions,
)


def ev(**fields: object) -> bytes:
    base = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "click", "value": 1.0, "ts": 100.0}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}).encode()


BAD_INTERACTIONS: list[tuple[str, bytes]] = [
    ("not_utf8", b'{"user_id": "\xff\xfe", "item_id": "i"}'),
    ("not_utf8", b"\xc3\x28"),
    ("not_json", b"{user_id: 1}"),
    ("not_json", b""),
    ("not_json", b'{"user_id": "u", "item_id": "i"} trailing'),
    ("not_json", b"[" * 60_000),  # nesting bomb: RecursionError must not escape
    ("not_object", b"[1, 2]"),
    ("not_object", b'"just a string"'),
    ("not_object", b"null"),
    ("missing_field", ev(user_id=...)),
    ("missing_field", ev(item_id=None)),
    ("missing_field", ev(type="rating", value=...)),
    ("wrong_type", ev(user_id=1.5)),
    ("wrong_type", ev(item_id=True)),
    ("wrong_type", ev(user_id={"id": 1})),
    ("wrong_type", ev(value="4")),
    ("wrong_type", ev(value=True)),  # bool is not a number
    ("wrong_type", ev(ts="2020-01-01")),
    ("wrong_type", ev(type=3)),
    ("wrong_type", ev(event_id=[1])),
    ("non_finite", b'{"user_id": "u", "item_id": "i", "value": NaN}'),
    ("non_finite", b'{"user_id": "u", "item_id": "i", "value": -Infinity}'),
    ("non_finite", b'{"user_id": "u", "item_id": "i", "ts": 1e999}'),
    ("out_of_range", ev(value=1e9)),
    ("out_of_range", ev(ts=-5)),
    ("out_of_range", ev(ts=1_700_000_000_000)),  # milliseconds
    ("out_of_range", ev(value=10**400)),  # an int too large for a float
    ("oversize", ev(user_id="u" * (MAX_ID_LENGTH + 1))),
    ("oversize", ev(item_id=10 ** (MAX_ID_LENGTH + 1))),
    ("oversize", ev(pad="x" * MAX_MESSAGE_BYTES)),
    ("empty_id", ev(user_id="")),
    ("empty_id", ev(item_id="   ")),
    ("unknown_type", ev(type="like")),
    ("unknown_type", ev(type="")),
]


@pytest.mark.parametrize(("reason", "raw"), BAD_INTERACTIONS, ids=[f"{r}-{n}" for n, (r, _) in
                                                                    enumerate(BAD_INTERACTIONS)])
def test_bad_interaction_gets_its_reason(reason: str, raw: bytes) -> None:
    got = parse_interaction(raw)
    assert isinstance(got, Rejection), got
    assert got.reason == reason, got
    assert got.reason in REASONS
    assert got.message and len(got.message) < 400


def test_every_reason_is_exercised() -> None:
    # items; item-deltas and user-state (tests/kafka/test_sync.py)
    covered = {r for r, _ in BAD_INTERACTIONS} | {"bad_tags", "bad_delta", "bad_user_state"}
    assert covered == set(REASONS)


def test_valid_interaction_is_normalised() -> None:
    got = parse_interaction(ev(user_id=42, item_id=" i7 ", type="rating", value=4, ts=12))
    assert got == {"user_id": "42", "item_id": "i7", "type": "rating", "value": 4.0, "ts": 12.0,
                   "event_id": "e1"}
    assert type(got["value"]) is float and type(got["ts"]) is float


def test_defaults_and_extra_fields() -> None:
    got = parse_interaction(b'{"user_id": "u", "item_id": 5, "extra": {"ignored": true}}')
    assert got == {"user_id": "u", "item_id": "5", "type": "click", "value": 1.0, "ts": None,
                   "event_id": None}
    assert parse_interaction("{\"user_id\": \"ü\", \"item_id\": \"é\"}".encode())["user_id"] == "ü"
    assert parse_interaction(bytearray(b'{"user_id": "u", "item_id": "i"}'))["item_id"] == "i"
    assert parse_interaction(memoryview(b'{"user_id": "u", "item_id": "i"}'))["item_id"] == "i"


def test_none_value_is_a_rejection_not_a_crash() -> None:
    assert parse_interaction(None).reason == "not_json"


def test_encode_round_trips() -> None:
    event = {"event_id": "x", "user_id": "ü", "item_id": "i", "type": "view", "value": 0.5, "ts": 3.0}
    assert parse_interaction(encode_interaction(event)) == event
    with pytest.raises(ValueError):
        encode_interaction({**event, "value": float("nan")})


@pytest.mark.parametrize(("raw", "reason"), [
    (b'{"item_id": "i", "tags": "a|b"}', "bad_tags"),
    (b'{"item_id": "i", "tags": ["a", 3]}', "bad_tags"),
    (b'{"item_id": "i", "tags": ["a", " "]}', "bad_tags"),
    (json.dumps({"item_id": "i", "tags": ["t"] * 65}).encode(), "bad_tags"),
    (json.dumps({"item_id": "i", "tags": ["x" * 65]}).encode(), "bad_tags"),
    (b'{"title": "no id"}', "missing_field"),
    (b'{"item_id": "i", "title": 5}', "wrong_type"),
    (json.dumps({"item_id": "i", "title": "t" * 2000}).encode(), "oversize"),
    (b'{"item_id": "i", "ts": NaN}', "non_finite"),
    (b'{"item_id": ""}', "empty_id"),
    (b"\xff", "not_utf8"),
    (b"[]", "not_object"),
])
def test_bad_item_gets_its_reason(raw: bytes, reason: str) -> None:
    got = parse_item(raw)
    assert isinstance(got, Rejection) and got.reason == reason, got


def test_valid_item() -> None:
    got = parse_item(b'{"item_id": 9, "title": "Heat", "tags": [" crime ", "noir"], "ts": 7}')
    assert got == ItemMeta(item_id="9", title="Heat", tags=("crime", "noir"), ts=7.0)
    assert parse_item(b'{"item_id": "x", "title": null, "tags": null}') == ItemMeta("x")


def test_validate_batch_keeps_good_ones_in_order_and_locates_bad_ones() -> None:
    raws = [ev(user_id="a", ts=1), b"oops", ev(user_id="b", ts=...), ev(type="nope"),
            ev(user_id="c", event_id=..., type="purchase", value=2.5, ts=3)]
    vb = validate_interactions(raws, record_ts=[10.0, 11.0, 12.0, 13.0, 14.0],
                               fallback_id="t:0:{}".format)
    assert vb.positions.tolist() == [0, 2, 4]
    assert [(i, r.reason) for i, r in vb.rejects] == [(1, "not_json"), (3, "unknown_type")]
    b = vb.batch
    assert b.user.tolist() == ["a", "b", "c"]
    assert b.ts.tolist() == [1.0, 12.0, 3.0]  # missing ts -> the record time
    assert b.event_id.tolist() == ["e1", "e1", "t:0:4"]  # missing event id -> topic:partition:offset
    assert b.kind.tolist() == [EVENT_TYPE_CODE["click"]] * 2 + [EVENT_TYPE_CODE["purchase"]]
    assert b.value.dtype == np.float32 and b.value.tolist() == [1.0, 1.0, 2.5]


def test_validate_empty_and_all_bad() -> None:
    assert len(validate_interactions([]).batch) == 0
    vb = validate_interactions([b"", b"\x00", b"{}"])
    assert len(vb.batch) == 0 and [r.reason for _, r in vb.rejects] == ["not_json", "not_json",
                                                                          "missing_field"]


@pytest.mark.parametrize("escaped, reason", [
    (r"u\ud800", "not_utf8"),  # a lone surrogate: valid JSON, not encodable as UTF-8
    (r"u\udfff", "not_utf8"),
    (r"u\u0000", "wrong_type"),  # NUL would be cut off in a checkpoint's fixed-width id arrays
])
def test_ids_that_could_not_be_published_or_checkpointed_are_rejected(escaped: str, reason: str) -> None:
    for field in ("user_id", "item_id"):
        ids = {"user_id": "u1", "item_id": "i1", field: "PLACEHOLDER"}
        raw = json.dumps(ids).replace("PLACEHOLDER", escaped).encode()
        got = parse_interaction(raw)
        assert isinstance(got, Rejection) and got.reason == reason, (field, got)
    # a non-ASCII id that UTF-8 carries is fine
    assert parse_interaction(json.dumps({"user_id": "Zoë", "item_id": "東京"}).encode())["item_id"] == "東京"


# -- topics written by others: their own field names, ts unit and type values --------------------------
RETAILROCKET = FieldMap.from_options("user=visitorid,item=itemid,ts=timestamp,type=event", "ms",
                                     "addtocart=cart,transaction=purchase")


def test_mapped_fields_read_another_systems_events() -> None:
    raws = [b'{"visitorid": 257597, "itemid": 355908, "timestamp": 1433221332117, "event": "view"}',
            b'{"visitorid": "u2", "itemid": "i9", "timestamp": 1433224214164, "event": "addtocart"}',
            b'{"visitorid": "u2", "itemid": "i9", "timestamp": 1433224214165, "event": "transaction"}',
            b'{"visitorid": "u3", "itemid": "i1"}']
    vb = validate_interactions(raws, record_ts=[None, None, None, 77.0], fields=RETAILROCKET)
    assert vb.rejects == []
    assert vb.batch.user.tolist() == ["257597", "u2", "u2", "u3"]
    assert vb.batch.ts.tolist() == [1433221332.117, 1433224214.164, 1433224214.165, 77.0]
    assert vb.batch.kind.tolist() == [EVENT_TYPE_CODE[t] for t in ("view", "cart", "purchase", "click")]


@pytest.mark.parametrize(("raw", "reason", "names"), [
    (b'{"user_id": "u", "item_id": "i"}', "missing_field", "visitorid is missing"),
    (b'{"visitorid": "u", "itemid": 1.5}', "wrong_type", "itemid must be a string or an integer"),
    (b'{"visitorid": "u", "itemid": "i", "event": "wishlist"}', "unknown_type",
     "event 'wishlist' is not mapped"),
    (b'{"visitorid": "u", "itemid": "i", "event": 3}', "wrong_type", "event must be a string"),
    (b'{"visitorid": "u", "itemid": "i", "timestamp": 1e20}', "out_of_range", "timestamp=1e+20"),
    (b'{"visitorid": "u", "itemid": "i", "timestamp": NaN}', "non_finite", "timestamp is not finite"),
    (b'{"visitorid": "u", "itemid": "i", "value": "5"}', "wrong_type", "value must be a number"),
])
def test_mapped_fields_are_validated_like_ours_and_errors_name_their_fields(raw: bytes, reason: str,
                                                                          names: str) -> None:
    rejection = parse_interaction(raw, RETAILROCKET)
    assert isinstance(rejection, Rejection) and rejection.reason == reason and names in rejection.message


def test_field_map_options_are_checked_and_the_default_keeps_its_fast_path() -> None:
    assert FieldMap.from_options("", "s", "") is DEFAULT_FIELDS
    with pytest.raises(ValueError, match="unknown role"):
        FieldMap.from_options("visitor=visitorid")
    with pytest.raises(ValueError, match="unknown event type"):
        FieldMap.from_options(types="addtocart=basket")
    with pytest.raises(ValueError, match="ts-unit"):
        FieldMap.from_options(ts_unit="us")
