"""The PhysicalAI-Autonomous-Vehicles dataset as it lies on disk, read without its devkit.

Layout (NVIDIA's `scripts/download_pai.py` and the `physical_ai_av` devkit 0.2.3):

    features.csv            feature, directory, chunk_path ("...chunk_{chunk_id:04d}.zip"),
                            clip_files_in_zip (JSON: member alias -> "{clip_id}.<...>")
    clip_index.parquet      index clip_id; chunk (int), clip_is_valid (bool), split
    camera/<cam>/<cam>.chunk_NNNN.zip         {clip}.<cam>.mp4, {clip}.<cam>.timestamps.parquet, ...
    labels/egomotion/egomotion.chunk_NNNN.zip {clip}.egomotion.parquet
    calibration/<name>/<name>.chunk_NNNN.parquet   one table per chunk, index (clip_id, sensor name)

Timestamps are integer microseconds on a clock that starts at each clip's common start (the first
camera frame may lie slightly before 0). Egomotion is ~100 Hz in the clip's anchor frame (the rig
at the clip start, yaw zeroed; velocity and acceleration in that frame). Intrinsics are f-theta
polynomials; extrinsics are sensor poses in the rig frame (sensor -> rig).

Parquet files are read with pyarrow; a pandas-written index (how the dataset's tables are made)
is found through the file's pandas metadata. Every problem raises `PaiFormatError`, which names
the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The model's cameras (spec §1.1) by model camera index, as the reference loader names them.
MODEL_CAMERA_FEATURES: dict[int, str] = {
    0: "camera_cross_left_120fov",
    1: "camera_front_wide_120fov",
    2: "camera_cross_right_120fov",
    6: "camera_front_tele_30fov",
}
EGOMOTION = "egomotion"
CAMERA_INTRINSICS = "camera_intrinsics"
SENSOR_EXTRINSICS = "sensor_extrinsics"

EGOMOTION_COLUMNS = ("timestamp", "qx", "qy", "qz", "qw", "x", "y", "z", "vx", "vy", "vz", "ax", "ay", "az",
                     "curvature")
FRAME_TIMESTAMP_COLUMNS = ("timestamp",)
INTRINSICS_COLUMNS = ("width", "height", "cx", "cy", *(f"bw_poly_{i}" for i in range(5)),
                      *(f"fw_poly_{i}" for i in range(5)))
EXTRINSICS_COLUMNS = ("qx", "qy", "qz", "qw", "x", "y", "z")
CLIP_INDEX_COLUMNS = ("chunk",)
_QUATERNION_TOLERANCE = 1e-3  # the planner's own unit-quaternion tolerance (core.egomotion)

DOWNLOAD_HINT = ("download it with NVIDIA's scripts/download_pai.py (NVlabs/alpamayo), e.g. "
                 "--chunk-ids {chunk} --camera {cameras} --calibration camera_intrinsics sensor_extrinsics "
                 "--labels egomotion")


class PaiFormatError(ValueError):
    """The dataset directory does not hold what a clip needs: names the file and the fix."""


@dataclass(frozen=True)
class Feature:
    """One row of features.csv."""

    name: str
    directory: str
    chunk_path: str  # relative path template with {chunk_id}
    clip_files: dict[str, str] | None  # zip member alias -> name template with {clip_id}; None: a chunk parquet

    def chunk_file(self, chunk: int) -> str:
        return self.chunk_path.format(chunk_id=chunk)

    def member(self, alias: str, clip_id: str) -> str:
        if not self.clip_files or alias not in self.clip_files:
            raise PaiFormatError(f"features.csv: feature {self.name} has no zip member {alias!r} "
                                 f"(it lists {sorted(self.clip_files or {})})")
        return self.clip_files[alias].format(clip_id=clip_id)


@dataclass(frozen=True)
class ClipEntry:
    clip_id: str
    chunk: int
    valid: bool = True
    split: str = ""


@dataclass
class Egomotion:
    """The egomotion table of one clip (anchor frame; rows in time order)."""

    timestamp_us: np.ndarray  # (N,) int64, clip clock
    position: np.ndarray  # (N, 3) m
    quaternion_xyzw: np.ndarray  # (N, 4) rig -> anchor
    velocity: np.ndarray  # (N, 3) m/s, anchor frame
    acceleration: np.ndarray  # (N, 3) m/s², anchor frame
    curvature: np.ndarray  # (N,) 1/m


@dataclass
class CameraStream:
    """One camera of one clip: the encoded video and one timestamp per frame."""

    feature: str
    video: bytes
    timestamp_us: np.ndarray  # (F,) int64, strictly increasing
    source: str  # where it came from, for messages


@dataclass(frozen=True)
class FThetaIntrinsics:
    """f-theta camera model: pixel radius r = fw_poly(θ) of the angle θ off the optical axis (z out of
    the lens, x right, y down); bw_poly is its inverse θ(r)."""

    width: int
    height: int
    cx: float
    cy: float
    fw_poly: tuple[float, ...]
    bw_poly: tuple[float, ...]


@dataclass(frozen=True)
class SensorPose:
    """Sensor pose in the rig frame: p_rig = R(q) · p_sensor + t."""

    translation: tuple[float, float, float]
    quaternion_xyzw: tuple[float, float, float, float]


# ----------------------------------------------------------------------------------------------
# Parquet helpers


def read_parquet(source: bytes | Path, where: str, required: Sequence[str] = ()) -> Any:
    """A pyarrow Table; PaiFormatError when unreadable or when a required column is missing."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(source) if isinstance(source, bytes | bytearray) else source)
    except Exception as exc:
        raise PaiFormatError(f"{where}: not a readable parquet file ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise PaiFormatError(f"{where}: missing column(s) {missing}; it has {table.column_names}. The "
                             "PhysicalAI-AV layout (physical_ai_av 0.2.3) has " + ", ".join(required))
    return table


def index_columns(table: Any) -> list[str]:
    """The names of the pandas index columns stored in a table (none for a range index)."""
    meta = table.schema.pandas_metadata or {}
    return [c for c in meta.get("index_columns", []) if isinstance(c, str)]


def float_columns(table: Any, names: Sequence[str], where: str) -> np.ndarray:
    """(rows, len(names)) float64; PaiFormatError for a non-numeric or non-finite column."""
    out = np.empty((table.num_rows, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        try:
            out[:, j] = np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise PaiFormatError(f"{where}: column {name!r} is not numeric ({table.schema.field(name).type})") from exc
    bad = ~np.isfinite(out)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise PaiFormatError(f"{where}: non-finite {names[col]} at row {row} ({int(bad.sum())} non-finite values)")
    return out


def timestamps_us(table: Any, where: str) -> np.ndarray:
    """The `timestamp` column as int64 µs, checked strictly increasing (as the devkit requires)."""
    import pyarrow as pa

    col = table.column("timestamp")
    if not pa.types.is_integer(col.type):
        raise PaiFormatError(f"{where}: column 'timestamp' must be integer microseconds, got {col.type}")
    ts = np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.int64)
    if ts.size == 0:
        raise PaiFormatError(f"{where}: the table is empty")
    steps = np.diff(ts)
    if steps.size and steps.min() <= 0:
        i = int(np.argmin(steps))
        raise PaiFormatError(f"{where}: timestamps are not strictly increasing at row {i + 1} "
                             f"({ts[i]} then {ts[i + 1]} µs)")
    return ts


# ----------------------------------------------------------------------------------------------


class PaiDataset:
    """A local copy (whole or partial) of PhysicalAI-Autonomous-Vehicles."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise PaiFormatError(f"{self.root} is not a directory (expected a PhysicalAI-AV dataset directory)")
        self.features = self._read_features()
        self.clips = self._read_clip_index()
        self._tables: dict[tuple[str, int], Any] = {}

    # ------------------------------------------------------------------ metadata
    def _read_features(self) -> dict[str, Feature]:
        path = self.root / "features.csv"
        if not path.is_file():
            raise PaiFormatError(f"{path} is missing: {self.root} is not a PhysicalAI-AV dataset directory "
                                 "(the download script always fetches features.csv and clip_index.parquet)")
        features: dict[str, Feature] = {}
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            need = {"feature", "directory", "chunk_path", "clip_files_in_zip"}
            if not need <= set(reader.fieldnames or ()):
                raise PaiFormatError(f"{path}: expected columns {sorted(need)}, got {reader.fieldnames}")
            for row in reader:
                files = None
                if row["clip_files_in_zip"]:
                    try:
                        files = dict(json.loads(row["clip_files_in_zip"]))
                    except (ValueError, TypeError) as exc:
                        raise PaiFormatError(f"{path}: feature {row['feature']}: clip_files_in_zip is not a "
                                             f"JSON object: {row['clip_files_in_zip']!r}") from exc
                features[row["feature"]] = Feature(row["feature"], row["directory"], row["chunk_path"], files)
        return features

    def _read_clip_index(self) -> dict[str, ClipEntry]:
        path = self.root / "clip_index.parquet"
        if not path.is_file():
            raise PaiFormatError(f"{path} is missing (the download script always fetches it; it maps clips to chunks)")
        table = read_parquet(path, str(path), CLIP_INDEX_COLUMNS)
        key = next((c for c in index_columns(table) if c in table.column_names), None)
        if key is None and "clip_id" in table.column_names:
            key = "clip_id"
        if key is None:
            raise PaiFormatError(f"{path}: no clip_id index or column (columns {table.column_names})")
        ids = [str(x) for x in table.column(key).to_pylist()]
        chunks = table.column("chunk").to_pylist()
        valid = table.column("clip_is_valid").to_pylist() if "clip_is_valid" in table.column_names else [True] * len(ids)
        split = table.column("split").to_pylist() if "split" in table.column_names else [""] * len(ids)
        return {c: ClipEntry(c, int(k), bool(v), str(s or "")) for c, k, v, s in zip(ids, chunks, valid, split, strict=True)}

    def feature(self, name: str) -> Feature:
        f = self.features.get(name)
        if f is None:
            raise PaiFormatError(f"{self.root / 'features.csv'} has no feature {name!r} (it has {sorted(self.features)})")
        return f

    def clip(self, clip_id: str) -> ClipEntry:
        entry = self.clips.get(clip_id)
        if entry is None:
            raise PaiFormatError(f"clip {clip_id} is not in {self.root / 'clip_index.parquet'} "
                                 f"({len(self.clips)} clips listed)")
        return entry

    def clips_in_chunks(self, chunks: Iterable[int], valid_only: bool = True) -> list[str]:
        wanted = set(chunks)
        return sorted(c for c, e in self.clips.items() if e.chunk in wanted and (e.valid or not valid_only))

    def downloaded_chunks(self) -> list[int]:
        """Chunks whose egomotion and model-camera files are all present."""
        chunks = sorted({e.chunk for e in self.clips.values()})
        names = [EGOMOTION, *MODEL_CAMERA_FEATURES.values()]
        return [k for k in chunks if all((self.root / self.feature(n).chunk_file(k)).is_file() for n in names)]

    # ------------------------------------------------------------------ files
    def chunk_path(self, feature: str, chunk: int) -> Path:
        path = self.root / self.feature(feature).chunk_file(chunk)
        if not path.is_file():
            cams = " ".join(MODEL_CAMERA_FEATURES.values())
            raise PaiFormatError(f"{feature} of chunk {chunk} is not downloaded: {path} is missing; "
                                 + DOWNLOAD_HINT.format(chunk=chunk, cameras=cams))
        return path

    def _member(self, feature: str, alias: str, clip_id: str) -> tuple[bytes, str]:
        f = self.feature(feature)
        path = self.chunk_path(feature, self.clip(clip_id).chunk)
        name = f.member(alias, clip_id)
        try:
            with zipfile.ZipFile(path) as zf:
                try:
                    return zf.read(name), f"{path.name}:{name}"
                except KeyError:
                    raise PaiFormatError(f"{path} has no member {name} (clip {clip_id} is not in this chunk file; "
                                         f"{len(zf.namelist())} members)") from None
        except zipfile.BadZipFile as exc:
            raise PaiFormatError(f"{path} is not a readable zip file ({exc}); download it again") from exc

    def _chunk_table(self, feature: str, chunk: int, required: Sequence[str]) -> Any:
        key = (feature, chunk)
        if key not in self._tables:
            path = self.chunk_path(feature, chunk)
            self._tables[key] = read_parquet(path, str(path), required)
        return self._tables[key]

    def _calibration_rows(self, feature: str, clip_id: str, required: Sequence[str]) -> tuple[dict[str, dict], str]:
        """{sensor name: row} of one clip from a per-chunk calibration table indexed (clip_id, name)."""
        chunk = self.clip(clip_id).chunk
        table = self._chunk_table(feature, chunk, required)
        where = str(self.root / self.feature(feature).chunk_file(chunk))
        keys = index_columns(table)
        if len(keys) < 2:
            raise PaiFormatError(f"{where}: expected an index (clip_id, sensor name), found index columns {keys}")
        clip_col, name_col = keys[0], keys[1]
        rows = {}
        for row in table.to_pylist():
            if str(row[clip_col]) == clip_id:
                rows[str(row[name_col])] = row
        if not rows:
            raise PaiFormatError(f"{where} has no rows for clip {clip_id}")
        return rows, where

    # ------------------------------------------------------------------ per clip
    def egomotion(self, clip_id: str) -> Egomotion:
        data, where = self._member(EGOMOTION, "egomotion", clip_id)
        table = read_parquet(data, where, EGOMOTION_COLUMNS)
        ts = timestamps_us(table, where)
        v = float_columns(table, EGOMOTION_COLUMNS[1:], where)
        quat = v[:, 0:4]
        err = np.abs(np.linalg.norm(quat, axis=1) - 1.0)
        if err.max() > _QUATERNION_TOLERANCE:
            i = int(np.argmax(err))
            raise PaiFormatError(f"{where}: quaternion (qx, qy, qz, qw) at row {i} has norm "
                                 f"{np.linalg.norm(quat[i]):.6f}, not 1 (tolerance {_QUATERNION_TOLERANCE})")
        return Egomotion(ts, v[:, 4:7], quat, v[:, 7:10], v[:, 10:13], v[:, 13])

    def camera(self, clip_id: str, feature: str) -> CameraStream:
        video, where = self._member(feature, "video", clip_id)
        stamps, stamps_where = self._member(feature, "frame_timestamps", clip_id)
        table = read_parquet(stamps, stamps_where, FRAME_TIMESTAMP_COLUMNS)
        return CameraStream(feature, video, timestamps_us(table, stamps_where), where)

    def intrinsics(self, clip_id: str) -> dict[str, FThetaIntrinsics]:
        rows, where = self._calibration_rows(CAMERA_INTRINSICS, clip_id, INTRINSICS_COLUMNS)
        out = {}
        for name, r in rows.items():
            vals = [r[c] for c in INTRINSICS_COLUMNS]
            if any(v is None or not np.isfinite(float(v)) for v in vals):
                raise PaiFormatError(f"{where}: clip {clip_id} camera {name}: non-finite intrinsics {dict(zip(INTRINSICS_COLUMNS, vals, strict=True))}")
            out[name] = FThetaIntrinsics(int(r["width"]), int(r["height"]), float(r["cx"]), float(r["cy"]),
                                         tuple(float(r[f"fw_poly_{i}"]) for i in range(5)),
                                         tuple(float(r[f"bw_poly_{i}"]) for i in range(5)))
        return out

    def extrinsics(self, clip_id: str) -> dict[str, SensorPose]:
        rows, where = self._calibration_rows(SENSOR_EXTRINSICS, clip_id, EXTRINSICS_COLUMNS)
        out = {}
        for name, r in rows.items():
            q = np.array([r["qx"], r["qy"], r["qz"], r["qw"]], dtype=np.float64)
            if not np.all(np.isfinite(q)) or abs(np.linalg.norm(q) - 1.0) > _QUATERNION_TOLERANCE:
                raise PaiFormatError(f"{where}: clip {clip_id} sensor {name}: quaternion {q.tolist()} is not a unit quaternion")
            t = (float(r["x"]), float(r["y"]), float(r["z"]))
            out[name] = SensorPose(t, (float(q[0]), float(q[1]), float(q[2]), float(q[3])))
        return out


def read_clip_list(path: str | Path) -> list[str]:
    """Clip ids from a text file (one per line, `#` comments) or a parquet table with a `key` column
    (NVIDIA's evaluation lists, e.g. alpamayo-recipes' gold eval parquet) or a clip_id column/index.
    Order is kept; duplicates are dropped."""
    p = Path(path)
    if not p.is_file():
        raise PaiFormatError(f"clip list {p} does not exist")
    if p.suffix == ".parquet":
        table = read_parquet(p, str(p))
        lower = {c.lower(): c for c in table.column_names}
        col = lower.get("key") or lower.get("clip_id")
        if col is None:
            raise PaiFormatError(f"{p}: expected a 'key' or 'clip_id' column, got {table.column_names}")
        ids = [str(x) for x in table.column(col).to_pylist()]
    else:
        ids = [ln.split("#", 1)[0].strip() for ln in p.read_text().splitlines()]
        ids = [i for i in ids if i]
    return list(dict.fromkeys(ids))
