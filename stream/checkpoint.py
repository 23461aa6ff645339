"""Crash-safe checkpoints of learner `State` plus the Kafka offsets it reflects.

A checkpoint is a directory `<state_dir>/ckpt-<seq>/` holding `users.npz` and `items.npz` (plain
numpy arrays in `np.savez`'s format, loaded with `allow_pickle=False` so a checkpoint can never execute
code) and `meta.json` (format version, creation time, offsets, the caller's meta, the learner's
`State.meta` and a manifest of every array: file, shape, dtype, plus each file's size and SHA-256).
It is written into a `.tmp-*` directory, every file fsynced, then renamed into place in one atomic
`rename`; a crash at any moment leaves either the complete new checkpoint or none. Loading walks from
the newest checkpoint back and skips any that fail validation, so a torn or tampered one falls back
to the previous. The newest `keep` checkpoints are kept.

Offsets are "topic:partition" -> the next offset to consume: the state contains exactly the events
before them, so a restarted worker seeks there and loses nothing (at-least-once for publishing).

User-side and item-side arrays are stored apart (`State.users` / `State.items`) so the users of a
partition can be cut out (`select_users`) and moved to another worker.

>>> import tempfile
>>> import numpy as np
>>> from learners.base import State
>>> d = tempfile.mkdtemp()
>>> state = State(users={"user_id": np.array(["u1", "u2"]), "vec": np.ones((2, 3), np.float32)},
...               items={"item_id": np.array(["a", "b", "c"]), "count": np.arange(3.0)},
...               meta={"kind": "Demo"})
>>> path = save_checkpoint(d, state, {"interactions:0": 42}, {"model_version": 3})
>>> loaded, offsets, meta = load_latest_checkpoint(d)
>>> offsets, meta["model_version"], loaded.meta, loaded.items["count"].tolist()
({'interactions:0': 42}, 3, {'kind': 'Demo'}, [0.0, 1.0, 2.0])
>>> select_users(loaded, ["u2"]).users["vec"].shape
(1, 3)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from learners.base import State

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "list_checkpoints",
    "load_checkpoint",
    "load_items",
    "load_latest_checkpoint",
    "save_checkpoint",
    "select_users",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
# 1: ids as fixed-width unicode (read as they are: the learners take any str array); 2: variable length
READABLE_VERSIONS = (1, 2)
_UTF8, _OFFSETS = "#utf8", "#offsets"  # members of a variable-length str array ('#' is not in _KEY)
_PREFIX = "ckpt-"
_TMP_PREFIX = ".tmp-"
_NAME = re.compile(r"ckpt-(\d{12})$")
_SIDES = ("users", "items")
_KEY = re.compile(r"[A-Za-z0-9_.\-]{1,128}$")  # array names become zip member names


class CheckpointError(ValueError):
    """A checkpoint is incomplete, corrupt, of another format, or holds something other than arrays."""


class CheckpointFormatError(CheckpointError):
    """A checkpoint written in a format this code does not read."""


# -- saving ---------------------------------------------------------------------------------------
def save_checkpoint(state_dir: str | Path, state: State, offsets: Mapping[str, int],
                    meta: Mapping[str, Any] | None = None, keep: int = 3) -> Path:
    """Write `state` and `offsets` atomically as the newest checkpoint under `state_dir`; return its path.

    Object arrays of str (external ids) are stored with variable length (UTF-8 bytes and offsets: a long
    id costs only itself); any other object array is refused, as is metadata that is not JSON. One writer
    per `state_dir`.
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    clean_offsets = _check_offsets(offsets)
    arrays = {side: _plain_arrays(side, getattr(state, side)) for side in _SIDES}
    members = {side: _members(arrays[side]) for side in _SIDES}
    try:
        meta_json = json.loads(json.dumps({"meta": dict(meta or {}), "state_meta": dict(state.meta)},
                                          allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint metadata must be JSON-serialisable: {exc}") from None

    seq = _next_seq(state_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{seq:012d}-", dir=state_dir))
    try:
        manifest: dict[str, Any] = {}
        for side in _SIDES:
            file = tmp / f"{side}.npz"
            _write_npz(file, members[side])
            manifest[side] = {
                "file": file.name,
                "bytes": file.stat().st_size,
                "sha256": _sha256(file),
                "arrays": {k: {"shape": list(a.shape), "dtype": "utf8" if _is_str(a) else a.dtype.str,
                               **({"encoding": "utf8-offsets"} if _is_str(a) else {})}
                           for k, a in arrays[side].items()},
            }
        document = {
            "format": "streamrec-checkpoint",
            "format_version": FORMAT_VERSION,
            "seq": seq,
            "created": time.time(),
            "offsets": clean_offsets,
            **meta_json,
            "manifest": manifest,
        }
        with open(tmp / "meta.json", "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        final = state_dir / f"{_PREFIX}{seq:012d}"
        os.rename(tmp, final)  # atomic on POSIX: readers see all of it or nothing
        _fsync_dir(state_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _prune(state_dir, keep)
    return final


def _check_offsets(offsets: Mapping[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for key, value in offsets.items():
        topic, sep, partition = str(key).rpartition(":")
        if not sep or not topic or not partition.isdigit():
            raise CheckpointError(f"offset key must be 'topic:partition', got {key!r}")
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise CheckpointError(f"offset of {key!r} must be a non-negative int, got {value!r}")
        out[str(key)] = int(value)
    return out


def _plain_arrays(side: str, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in arrays.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise CheckpointError(f"{side} array name {key!r} must match {_KEY.pattern}")
        array = np.asarray(value)
        if array.dtype.hasobject:
            flat = array.ravel()
            if not all(isinstance(x, str) for x in flat.tolist()):
                raise CheckpointError(
                    f"{side}[{key!r}] is an object array of non-str values: arrays only, no pickle")
        out[key] = array
    return out


def _is_str(array: np.ndarray) -> bool:
    return array.dtype == object or array.dtype.kind == "U"


def _members(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The npz members of a side: a str array becomes its UTF-8 bytes and their offsets."""
    out: dict[str, np.ndarray] = {}
    for key, array in arrays.items():
        if _is_str(array):
            out[key + _UTF8], out[key + _OFFSETS] = _encode(array)
        else:
            out[key] = array
    return out


def _codepoints(fixed: np.ndarray) -> np.ndarray:
    """(n, width) uint32 code points of a flat fixed-width unicode array (0 pads the end)."""
    width = fixed.dtype.itemsize // 4
    return fixed.view(np.uint32).reshape(len(fixed), width) if width else np.zeros((len(fixed), 0), np.uint32)


def _encode(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes and offsets of a str array; ASCII ids (the usual case: millions of them) in numpy, no
    Python object per string."""
    fixed = array.ravel().astype(str)
    codes = _codepoints(fixed)
    offsets = np.zeros(len(fixed) + 1, np.int64)
    if bool((codes < 128).all()):
        present = codes != 0
        np.cumsum(present.sum(axis=1), out=offsets[1:])
        return codes[present].astype(np.uint8), offsets
    encoded = [x.encode("utf-8") for x in fixed.tolist()]
    np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
    return np.frombuffer(b"".join(encoded), np.uint8), offsets


def _decode(buffer: np.ndarray, offsets: np.ndarray, shape: list[int]) -> np.ndarray:
    """The str array (fixed-width unicode, as wide as its longest id) of `_encode`'s bytes and offsets."""
    n = int(np.prod(shape))
    if len(offsets) != n + 1 or (n and (offsets[0] != 0 or offsets[-1] != len(buffer)
                                        or bool((np.diff(offsets) < 0).any()))):
        raise ValueError("string offsets do not fit their bytes")
    lengths = np.diff(offsets)
    if bool((buffer < 128).all()):
        width = int(lengths.max(initial=0))
        codes = np.zeros((n, max(width, 1)), np.uint32)
        rows = np.repeat(np.arange(n), lengths)
        cols = np.arange(len(buffer)) - np.repeat(offsets[:-1], lengths)
        codes[rows, cols] = buffer
        return codes.reshape(-1).view(f"<U{max(width, 1)}").reshape(shape)
    data = buffer.tobytes()
    bounds = offsets.tolist()
    return np.array([data[a:b].decode("utf-8") for a, b in zip(bounds[:-1], bounds[1:], strict=True)],
                    dtype=str).reshape(shape)


def _write_npz(file: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """What `np.savez` writes (so `np.load` reads it), but refusing pickle and with any array names."""
    with open(file, "wb") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for key, array in arrays.items():
                with zf.open(f"{key}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
        fh.flush()
        os.fsync(fh.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _next_seq(state_dir: Path) -> int:
    seqs = [int(m.group(1)) for p in state_dir.iterdir() if (m := _NAME.match(p.name))]
    return max(seqs, default=0) + 1


def _prune(state_dir: Path, keep: int) -> None:
    """Drop all but the newest `keep` checkpoints, and temp dirs left by crashed writers."""
    for old in list_checkpoints(state_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    for tmp in state_dir.glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)


# -- loading --------------------------------------------------------------------------------------
def list_checkpoints(state_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories under `state_dir`, newest first (temp dirs are never listed)."""
    state_dir = Path(state_dir)
    if not state_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in state_dir.iterdir() if (m := _NAME.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def load_checkpoint(path: str | Path) -> tuple[State, dict[str, int], dict[str, Any]]:
    """Load and validate one checkpoint directory; raise `CheckpointError` when it is not sound.

    The returned meta is the caller's meta plus `checkpoint` (path, seq, created, format_version).
    """
    path = Path(path)
    try:
        document = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no meta.json (incomplete checkpoint)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable meta.json: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != "streamrec-checkpoint":
        raise CheckpointError(f"{path}: not a streamrec checkpoint")
    if document.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointFormatError(f"{path}: format version {document.get('format_version')!r}, "
                                    f"this code reads {READABLE_VERSIONS}: convert it with the streamrec "
                                    "that wrote it (replay --init-state, then --save-state) or remove it")
    offsets = _check_offsets(document.get("offsets") or {})
    manifest = document.get("manifest")
    if not isinstance(manifest, dict) or set(manifest) != set(_SIDES):
        raise CheckpointError(f"{path}: manifest must list {_SIDES}")
    sides = {side: _load_side(path, side, manifest[side]) for side in _SIDES}
    state = State(users=sides["users"], items=sides["items"], meta=dict(document.get("state_meta") or {}))
    meta = dict(document.get("meta") or {})
    meta["checkpoint"] = {"path": str(path), "seq": document.get("seq"), "created": document.get("created"),
                          "format_version": document.get("format_version")}
    return state, offsets, meta


def load_items(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, int]]:
    """The item side of a checkpoint directory that holds only `items.npz` and `meta.json` (an item-state
    snapshot another worker sent, `stream.sync`): (item arrays, the learner's state meta, offsets);
    `CheckpointError` when it is not sound."""
    path = Path(path)
    try:
        document = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable meta.json: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != "streamrec-checkpoint":
        raise CheckpointError(f"{path}: not a streamrec checkpoint")
    if document.get("format_version") not in READABLE_VERSIONS:
        raise CheckpointFormatError(f"{path}: format version {document.get('format_version')!r}")
    manifest = document.get("manifest")
    if not isinstance(manifest, dict) or "items" not in manifest:
        raise CheckpointError(f"{path}: manifest lists no items")
    return (_load_side(path, "items", manifest["items"]), dict(document.get("state_meta") or {}),
            _check_offsets(document.get("offsets") or {}))


def _load_side(path: Path, side: str, entry: Any) -> dict[str, np.ndarray]:
    if not isinstance(entry, dict) or entry.get("file") != f"{side}.npz":
        raise CheckpointError(f"{path}: bad manifest entry for {side}")
    file = path / entry["file"]
    if not file.is_file() or file.stat().st_size != entry.get("bytes"):
        raise CheckpointError(f"{path}: {file.name} is missing or truncated")
    if _sha256(file) != entry.get("sha256"):
        raise CheckpointError(f"{path}: {file.name} does not match its checksum")
    expected = entry.get("arrays") or {}
    out: dict[str, np.ndarray] = {}
    try:
        with np.load(file, allow_pickle=False) as npz:
            encoded = {k for k, want in expected.items()
                       if isinstance(want, dict) and want.get("encoding") == "utf8-offsets"}
            names = {n for k in expected for n in ((k + _UTF8, k + _OFFSETS) if k in encoded else (k,))}
            if set(npz.files) != names:
                raise CheckpointError(f"{path}: {file.name} holds {sorted(npz.files)}, manifest says "
                                      f"{sorted(names)}")
            for key, want in expected.items():
                if key in encoded:
                    array = _decode(npz[key + _UTF8], npz[key + _OFFSETS], want.get("shape") or [0])
                    dtype = "utf8"
                else:
                    array = npz[key]  # raises ValueError for object arrays: pickle is never run
                    dtype = array.dtype.str
                if list(array.shape) != want.get("shape") or dtype != want.get("dtype"):
                    raise CheckpointError(f"{path}: {side}[{key!r}] is {dtype}{array.shape}, "
                                          f"manifest says {want}")
                out[key] = array
    except CheckpointError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise CheckpointError(f"{path}: cannot read {file.name} without pickle: {exc}") from None
    return out


def load_latest_checkpoint(state_dir: str | Path) -> tuple[State, dict[str, int], dict[str, Any]] | None:
    """The newest sound checkpoint under `state_dir` as (state, offsets, meta), or None if there is none.

    Unsound ones (torn, tampered) are skipped with a warning, falling back to older ones; one written in
    a format this code does not read is refused (`CheckpointFormatError`): falling back past it would
    silently start from older state.
    """
    for path in list_checkpoints(state_dir):
        try:
            return load_checkpoint(path)
        except CheckpointFormatError:
            raise
        except CheckpointError as exc:
            log.warning("skipping checkpoint: %s", exc)
    return None


# -- sharding -------------------------------------------------------------------------------------
def select_users(state: State, user_ids: Iterable[str], id_key: str = "user_id") -> State:
    """The user-side rows of `user_ids` (items and meta shared), e.g. to hand a partition's users over.

    Every user array must be row-aligned with `state.users[id_key]`, except ragged ones: `P.cols` holds
    the rows' values one after another, `P.len` (row-aligned) how many each row has. Unknown ids are
    ignored.
    """
    if id_key not in state.users:
        raise KeyError(f"state.users has no id array {id_key!r} (has {sorted(state.users)})")
    ids = np.asarray(state.users[id_key]).astype(str)
    wanted = np.asarray(list(user_ids), dtype=str)
    rows = np.flatnonzero(np.isin(ids, wanted))
    users: dict[str, np.ndarray] = {}
    for key, array in state.users.items():
        array = np.asarray(array)
        if key.endswith(".cols") and key[:-5] + ".len" in state.users:
            lengths = np.asarray(state.users[key[:-5] + ".len"], np.int64)
            starts = np.cumsum(lengths) - lengths
            take = np.repeat(starts[rows] - np.cumsum(lengths[rows]) + lengths[rows], lengths[rows])
            users[key] = array[take + np.arange(len(take))]
            continue
        if array.ndim == 0 or len(array) != len(ids):
            raise ValueError(f"state.users[{key!r}] has {0 if array.ndim == 0 else len(array)} rows, "
                             f"not one per user ({len(ids)}): cannot select users from it")
        users[key] = array[rows]
    return State(users=users, items=state.items, meta=dict(state.meta))
