"""Per-bag results files: one JSON Lines file per bag, written when the bag is done.

`OUT/results/<bag name>.jsonl` holds everything a report needs, so the reduce step (the report
over many bags) reads these files and never the bags:

    {"kind": "bag", "format": 1, "name": ..., "bag": ..., "status": "ok" | "incomplete" | "failed",
     "settings_key": ..., "bag_fingerprint": ..., "mode": ..., "error": ..., "input_errors": {...},
     "wall_s": ..., "meta": {...}, "ticks": N}
    {"kind": "tick", "record": {TickRecord}, "score": {TickScore} | null}     one line per tick
    {"kind": "end", "ticks": N}

Records and scores are written field by field (`dataclasses.fields`), so a field added to
TickRecord or TickScore is carried without touching this module; a field the reading code does
not know is dropped with a warning. Arrays are `{"__ndarray__": dtype, "shape": [...], "data":
nested list}`; float32 values are written in their shortest exact form, so a file reads back
bit for bit. Files are written to a temporary name and renamed, so a file that exists is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alpamayo_ros.core.metrics import TrajectoryMetrics
from alpamayo_ros.tools.replay import ReplayResult
from alpamayo_ros.tools.scoring import TickRecord, TickScore

log = logging.getLogger(__name__)

RESULTS_FORMAT = 1
_ND, _MAP, _TYPE = "__ndarray__", "__map__", "__type__"
_TYPES: dict[str, type] = {t.__name__: t for t in (TickRecord, TickScore, TrajectoryMetrics)}


class ResultsFileError(ValueError):
    """A results file that cannot be read (not one of ours, another format, cut short)."""


# ----------------------------------------------------------------------------------------------
# Lossless JSON for records and scores


def _array_data(a: np.ndarray) -> Any:
    if a.dtype == np.float32:
        short = a.astype(str).astype(np.float64)  # shortest repr that reads back as the same float32
        if np.array_equal(short.astype(np.float32), a, equal_nan=True):
            return short.tolist()
    return a.tolist()


def encode(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return {_ND: v.dtype.str, "shape": list(v.shape), "data": _array_data(v)}
    if isinstance(v, np.generic):
        return v.item()
    if is_dataclass(v) and not isinstance(v, type):
        if type(v).__name__ not in _TYPES:
            raise TypeError(f"{type(v).__name__} is not a results type ({sorted(_TYPES)})")
        return {_TYPE: type(v).__name__} | {f.name: encode(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, dict):
        if all(isinstance(k, str) for k in v):
            return {k: encode(x) for k, x in v.items()}
        return {_MAP: [[encode(k), encode(x)] for k, x in v.items()]}  # e.g. horizon (float) -> value
    if isinstance(v, list | tuple):
        return [encode(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


_dropped_fields: set[str] = set()


def decode(v: Any) -> Any:
    if isinstance(v, list):
        return [decode(x) for x in v]
    if not isinstance(v, dict):
        return v
    if _ND in v:
        return np.asarray(v["data"], dtype=np.dtype(v[_ND])).reshape(v["shape"])
    if _MAP in v:
        return {decode(k): decode(x) for k, x in v[_MAP]}
    if _TYPE in v:
        cls = _TYPES[v[_TYPE]]
        known = {f.name for f in fields(cls)}
        for name in set(v) - known - {_TYPE}:
            if f"{cls.__name__}.{name}" not in _dropped_fields:
                _dropped_fields.add(f"{cls.__name__}.{name}")
                log.warning("results file field %s.%s is unknown to this version: dropped", cls.__name__, name)
        return cls(**{k: decode(x) for k, x in v.items() if k in known})
    return {k: decode(x) for k, x in v.items()}


# ----------------------------------------------------------------------------------------------
# One bag <-> one file


def bag_fingerprint(bag: str | Path) -> str | None:
    """What identifies a bag's content cheaply: its files' names and sizes and its metadata.yaml
    (a re-imported or re-recorded bag changes it). None when the bag is not readable here."""
    bag = Path(bag)
    try:
        files = sorted(p for p in bag.rglob("*") if p.is_file()) if bag.is_dir() else [bag]
        digest = hashlib.sha256()
        for p in files:
            digest.update(f"{p.relative_to(bag) if bag.is_dir() else p.name}:{p.stat().st_size}\n".encode())
            if p.name == "metadata.yaml":
                digest.update(p.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()[:16] if files else None


def header_of(result: ReplayResult, settings_key: str, fingerprint: str | None) -> dict[str, Any]:
    return {"kind": "bag", "format": RESULTS_FORMAT, "name": result.name, "bag": str(result.bag),
            "status": result.status, "settings_key": settings_key, "bag_fingerprint": fingerprint,
            "mode": result.mode, "error": result.error, "input_errors": result.input_errors,
            "wall_s": result.wall_s, "meta": encode(result.meta), "ticks": len(result.records)}


def write_result(path: Path, result: ReplayResult, settings_key: str, fingerprint: str | None = None) -> Path:
    """Write one scored bag's results file (atomically: a file that exists is complete)."""
    by_t0 = {s.t0: s for s in result.scored()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "w") as f:
        f.write(json.dumps(header_of(result, settings_key, fingerprint)) + "\n")
        for r in result.records:
            score = by_t0.get(r.t0) if r.xyz is not None else None
            f.write(json.dumps({"kind": "tick", "record": encode(r), "score": encode(score)}) + "\n")
        f.write(json.dumps({"kind": "end", "ticks": len(result.records)}) + "\n")
    tmp.replace(path)
    return path


def read_header(path: Path) -> dict[str, Any]:
    with open(path) as f:
        try:
            head = json.loads(f.readline())
        except json.JSONDecodeError as exc:
            raise ResultsFileError(f"{path}: not a results file ({exc})") from exc
    if head.get("kind") != "bag" or head.get("format") != RESULTS_FORMAT:
        raise ResultsFileError(f"{path}: not a results file of format {RESULTS_FORMAT} (first line {str(head)[:120]})")
    return head


def read_result(path: Path) -> ReplayResult:
    """A bag's ReplayResult back from its results file: records, scores, error, meta (no ground
    truth buffer: the scores carry what the report needs)."""
    head = read_header(path)
    records: list[TickRecord] = []
    scores: list[TickScore] = []
    end = None
    with open(path) as f:
        next(f)
        for line in f:
            row = json.loads(line)
            if row["kind"] == "tick":
                records.append(decode(row["record"]))
                if row["score"] is not None:
                    scores.append(decode(row["score"]))
            elif row["kind"] == "end":
                end = row["ticks"]
    if end != head["ticks"] or len(records) != end:
        raise ResultsFileError(f"{path}: cut short ({len(records)} of {head['ticks']} ticks)")
    return ReplayResult(head["mode"], Path(head["bag"]), records, None, error=head["error"],
                        input_errors=dict(head["input_errors"]), wall_s=float(head["wall_s"]),
                        meta=decode(head["meta"]), scores=scores)
