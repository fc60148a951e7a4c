"""Synthetic PhysicalAI-Autonomous-Vehicles clips in the dataset's exact on-disk format.

Written the way the dataset is (pandas-written parquet with the devkit's column names, index
names and units; per-chunk zips named from features.csv; H.264 MP4 written with PyAV), so the
importer is tested against the real layout without downloading anything:

    features.csv, clip_index.parquet, metadata/{feature_presence,data_collection}.parquet
    camera/<cam>/<cam>.chunk_NNNN.zip        {clip}.<cam>.mp4 / .timestamps.parquet / .blurred_boxes.parquet
    labels/egomotion/egomotion.chunk_NNNN.zip   {clip}.egomotion.parquet (~100 Hz)
    calibration/<name>/<name>.chunk_NNNN.parquet  indexed (clip_id, camera_name | sensor_name) / clip_id

Motion is closed form: constant speed v along the body x axis, constant yaw rate ω, constant
pitch θ (R(t) = Rz(ω·t)·Ry(θ), position at t = 0 is the origin: the anchor frame). So every pose,
velocity and the expected body twist are known exactly at any time. Each video frame shows its
own index as two flat colour levels (red = 16·(i mod 16) + 8, green = 16·(i // 16 mod 16) + 8),
which survive H.264 and JPEG, so a test can tell which frame a bag image came from.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ALL_CAMERAS = ("camera_cross_left_120fov", "camera_cross_right_120fov", "camera_front_tele_30fov",
               "camera_front_wide_120fov", "camera_rear_left_70fov", "camera_rear_right_70fov",
               "camera_rear_tele_30fov")
MODEL_CAMERAS = ("camera_cross_left_120fov", "camera_front_wide_120fov", "camera_cross_right_120fov",
                 "camera_front_tele_30fov")
# Mount yaw (deg, +left) and position in the rig frame of each camera.
MOUNTS = {
    "camera_cross_left_120fov": (60.0, (2.0, 0.9, 1.5)),
    "camera_front_wide_120fov": (0.0, (2.1, 0.0, 1.6)),
    "camera_cross_right_120fov": (-60.0, (2.0, -0.9, 1.5)),
    "camera_front_tele_30fov": (0.0, (2.1, 0.1, 1.6)),
    "camera_rear_left_70fov": (150.0, (1.0, 0.9, 1.5)),
    "camera_rear_right_70fov": (-150.0, (1.0, -0.9, 1.5)),
    "camera_rear_tele_30fov": (180.0, (-0.5, 0.0, 1.6)),
}
CAMERA_PERIOD_US = 33_333


@dataclass
class FixtureClip:
    clip_id: str
    chunk: int = 0
    duration_s: float = 12.0
    speed_mps: float = 10.0
    yaw_rate: float = 0.0  # rad/s
    pitch: float = 0.0  # rad (a constant grade)
    egomotion_hz: float = 100.0
    first_frame_us: int = -14_000  # the first camera frame lies slightly before clip time 0
    width: int = 64
    height: int = 36
    cameras: tuple[str, ...] = MODEL_CAMERAS
    extra_timestamp_rows: int = 0  # > 0: the timestamps table disagrees with the video
    drop_egomotion_columns: tuple[str, ...] = ()
    valid: bool = True
    seed: int = 0
    # filled by write_pai_dataset: camera -> frame timestamps (µs), egomotion timestamps (µs)
    frame_us: dict[str, np.ndarray] = field(default_factory=dict)
    egomotion_us: np.ndarray | None = None

    # ------------------------------------------------------------------ closed-form motion
    def rotation(self, t_s: np.ndarray) -> np.ndarray:
        """(N, 3, 3) rig -> anchor: Rz(ω t)·Ry(θ)."""
        yaw = self.yaw_rate * np.asarray(t_s, dtype=np.float64)
        c, s = np.cos(yaw), np.sin(yaw)
        cp, sp = np.cos(self.pitch), np.sin(self.pitch)
        rz = np.zeros((len(yaw), 3, 3))
        rz[:, 0, 0], rz[:, 0, 1], rz[:, 1, 0], rz[:, 1, 1], rz[:, 2, 2] = c, -s, s, c, 1.0
        ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
        return rz @ ry

    def position(self, t_s: np.ndarray) -> np.ndarray:
        t = np.asarray(t_s, dtype=np.float64)
        horizontal = self.speed_mps * np.cos(self.pitch)
        if abs(self.yaw_rate) < 1e-12:
            x, y = horizontal * t, np.zeros_like(t)
        else:
            x = horizontal * np.sin(self.yaw_rate * t) / self.yaw_rate
            y = horizontal * (1.0 - np.cos(self.yaw_rate * t)) / self.yaw_rate
        return np.stack([x, y, -self.speed_mps * np.sin(self.pitch) * t], axis=-1)

    def velocity(self, t_s: np.ndarray) -> np.ndarray:
        """Anchor-frame velocity R·(v, 0, 0)."""
        return self.rotation(t_s)[:, :, 0] * self.speed_mps

    def body_angular_velocity(self) -> np.ndarray:
        """Constant body rate: Ry(θ)ᵀ·(0, 0, ω)."""
        cp, sp = np.cos(self.pitch), np.sin(self.pitch)
        return np.array([-sp * self.yaw_rate, 0.0, cp * self.yaw_rate])


def quaternions(rot: np.ndarray) -> np.ndarray:
    from alpamayo_ros.core.geometry import rotmat_to_quat

    return rotmat_to_quat(rot)


def frame_colour(index: int) -> tuple[int, int]:
    return 16 * (index % 16) + 8, 16 * ((index // 16) % 16) + 8


def frame_index_of(rgb: np.ndarray) -> int:
    """The frame index a fixture image shows (centre pixels, robust to codec noise)."""
    h, w = rgb.shape[:2]
    centre = rgb[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)
    lo = int(round((centre[0] - 8) / 16)) % 16
    hi = int(round((centre[1] - 8) / 16)) % 16
    return lo + 16 * hi


# ----------------------------------------------------------------------------------------------


def _parquet_bytes(df) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf)
    return buf.getvalue()


def _mp4(clip: FixtureClip, camera: str, n_frames: int) -> bytes:
    """H.264 MP4 at constant 30 fps, every frame showing its index (plus a camera-specific stripe)."""
    import av

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = clip.width, clip.height, "yuv420p"
        stream.options = {"crf": "10", "preset": "ultrafast", "g": "30"}
        stripe = 40 * (ALL_CAMERAS.index(camera) + 1)
        for i in range(n_frames):
            img = np.empty((clip.height, clip.width, 3), np.uint8)
            r, g = frame_colour(i)
            img[..., 0], img[..., 1], img[..., 2] = r, g, 128
            img[:4, :, 2] = stripe
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _camera_timestamps(clip: FixtureClip, camera: str, rng: np.random.Generator) -> np.ndarray:
    """Clip-clock µs: 30 fps from slightly before 0, a per-camera phase and ±0.2 ms jitter."""
    n = int(np.floor((clip.duration_s * 1e6 - clip.first_frame_us) / CAMERA_PERIOD_US)) + 1
    phase = 700 * ALL_CAMERAS.index(camera)
    ts = clip.first_frame_us + phase + CAMERA_PERIOD_US * np.arange(n) + rng.integers(-200, 201, n)
    return ts.astype(np.int64)


def _egomotion_df(clip: FixtureClip, rng: np.random.Generator):
    import pandas as pd

    step = int(round(1e6 / clip.egomotion_hz))
    n = int(np.floor((clip.duration_s + 0.05) * 1e6 / step)) + 1
    ts = (step * np.arange(n) + np.concatenate([[0], rng.integers(-300, 301, n - 1)])).astype(np.int64)
    t = ts * 1e-6
    rot = clip.rotation(t)
    q, p, v = quaternions(rot), clip.position(t), clip.velocity(t)
    curvature = np.full(n, clip.yaw_rate / clip.speed_mps if clip.speed_mps else 0.0)
    accel = np.zeros((n, 3))  # constant speed on the arc: centripetal only
    accel[:, :2] = np.stack([-np.sin(clip.yaw_rate * t), np.cos(clip.yaw_rate * t)], -1) * clip.speed_mps * clip.yaw_rate
    df = pd.DataFrame({
        "timestamp": ts, "qx": q[:, 0], "qy": q[:, 1], "qz": q[:, 2], "qw": q[:, 3],
        "x": p[:, 0], "y": p[:, 1], "z": p[:, 2], "vx": v[:, 0], "vy": v[:, 1], "vz": v[:, 2],
        "ax": accel[:, 0], "ay": accel[:, 1], "az": accel[:, 2], "curvature": curvature,
    })
    clip.egomotion_us = ts
    return df.drop(columns=list(clip.drop_egomotion_columns))


def ftheta_row(camera: str, width: int, height: int) -> dict:
    """f-theta intrinsics: a 120° lens with odd terms only for the front camera (an equidistant
    model represents it exactly) and with even terms for the others."""
    hfov = np.radians(30.0 if "tele" in camera else (70.0 if "70" in camera else 120.0))
    f = (width / 2) / (hfov / 2)
    fw = [0.0, f, 0.0, -0.02 * f, 0.0] if camera == "camera_front_wide_120fov" else [0.0, f, 0.01 * f, -0.03 * f, 0.002 * f]
    theta = np.linspace(0, 1.4, 200)
    r = np.polynomial.polynomial.polyval(theta, fw)
    bw = np.polynomial.polynomial.polyfit(r, theta, 4)
    row = {"width": width, "height": height, "cx": width / 2 - 0.5, "cy": height / 2 + 0.25}
    row.update({f"bw_poly_{i}": float(bw[i]) for i in range(5)})
    row.update({f"fw_poly_{i}": float(fw[i]) for i in range(5)})
    return row


def camera_pose(camera: str) -> tuple[np.ndarray, np.ndarray]:
    """(translation, quaternion xyzw) of a camera's optical frame in the rig frame."""
    yaw, t = MOUNTS[camera]
    optical_to_flu = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    c, s = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return np.array(t), quaternions((rz @ optical_to_flu)[None])[0]


def _features_csv(chunk_cameras: list[str]) -> str:
    import csv

    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["feature", "directory", "chunk_path", "clip_files_in_zip"])
    w.writerow(["egomotion", "labels", "labels/egomotion/egomotion.chunk_{chunk_id:04d}.zip",
                json.dumps({"egomotion": "{clip_id}.egomotion.parquet"})])
    for name in ("camera_intrinsics", "sensor_extrinsics", "vehicle_dimensions"):
        w.writerow([name, "calibration", f"calibration/{name}/{name}.chunk_{{chunk_id:04d}}.parquet", ""])
    for cam in chunk_cameras:
        w.writerow([cam, "camera", f"camera/{cam}/{cam}.chunk_{{chunk_id:04d}}.zip", json.dumps({
            "video": f"{{clip_id}}.{cam}.mp4", "frame_timestamps": f"{{clip_id}}.{cam}.timestamps.parquet",
            "blurred_boxes": f"{{clip_id}}.{cam}.blurred_boxes.parquet"})])
    return out.getvalue()


def write_pai_dataset(root: Path, clips: list[FixtureClip]) -> Path:
    """Write `clips` under `root` in the dataset's layout; fills each clip's timestamps."""
    import pandas as pd

    root.mkdir(parents=True, exist_ok=True)
    (root / "features.csv").write_text(_features_csv(list(ALL_CAMERAS)))
    idx = pd.Index([c.clip_id for c in clips], name="clip_id")
    pd.DataFrame({"chunk": [c.chunk for c in clips], "clip_is_valid": [c.valid for c in clips],
                  "split": ["train"] * len(clips)}, index=idx).to_parquet(root / "clip_index.parquet")
    (root / "metadata").mkdir(exist_ok=True)
    presence = {f: [f in c.cameras or not f.startswith("camera_") for c in clips]
                for f in ["egomotion", "camera_intrinsics", "sensor_extrinsics", "vehicle_dimensions", *ALL_CAMERAS]}
    pd.DataFrame(presence, index=idx).to_parquet(root / "metadata" / "feature_presence.parquet")
    pd.DataFrame({"country": ["United States"] * len(clips), "month": [7] * len(clips),
                  "hour_of_day": [14] * len(clips), "platform_class": ["hyperion_8.1"] * len(clips)},
                 index=idx).to_parquet(root / "metadata" / "data_collection.parquet")
    for chunk in sorted({c.chunk for c in clips}):
        _write_chunk(root, chunk, [c for c in clips if c.chunk == chunk])
    return root


def _write_chunk(root: Path, chunk: int, clips: list[FixtureClip]) -> None:
    import pandas as pd

    tag = f"chunk_{chunk:04d}"
    ego_dir = root / "labels" / "egomotion"
    ego_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(ego_dir / f"egomotion.{tag}.zip", "w") as zf:
        for c in clips:
            zf.writestr(f"{c.clip_id}.egomotion.parquet", _parquet_bytes(_egomotion_df(c, np.random.default_rng(c.seed))))
    for cam in ALL_CAMERAS:
        members = [c for c in clips if cam in c.cameras]
        if not members:
            continue
        cam_dir = root / "camera" / cam
        cam_dir.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(cam_dir / f"{cam}.{tag}.zip", "w") as zf:
            for c in members:
                ts = _camera_timestamps(c, cam, np.random.default_rng(c.seed + 1 + ALL_CAMERAS.index(cam)))
                c.frame_us[cam] = ts
                zf.writestr(f"{c.clip_id}.{cam}.mp4", _mp4(c, cam, len(ts)))
                rows = np.concatenate([ts, ts[-1] + CAMERA_PERIOD_US * np.arange(1, c.extra_timestamp_rows + 1)])
                zf.writestr(f"{c.clip_id}.{cam}.timestamps.parquet",
                            _parquet_bytes(pd.DataFrame({"timestamp": rows.astype(np.int64)})))
                boxes = pd.DataFrame({"frame_index": np.array([0, 5], np.int64), "x1": [1.0, 2.0], "y1": [1.0, 2.0],
                                      "x2": [9.0, 8.0], "y2": [6.0, 7.0]})
                zf.writestr(f"{c.clip_id}.{cam}.blurred_boxes.parquet", _parquet_bytes(boxes))
    _write_calibration(root, tag, clips)


def _write_calibration(root: Path, tag: str, clips: list[FixtureClip]) -> None:
    import pandas as pd

    intr, extr, dims = [], [], []
    for c in clips:
        for cam in ALL_CAMERAS:
            intr.append({"clip_id": c.clip_id, "camera_name": cam, **ftheta_row(cam, c.width, c.height)})
            t, q = camera_pose(cam)
            extr.append({"clip_id": c.clip_id, "sensor_name": cam, "qx": q[0], "qy": q[1], "qz": q[2], "qw": q[3],
                         "x": t[0], "y": t[1], "z": t[2]})
        extr.append({"clip_id": c.clip_id, "sensor_name": "lidar_top_360fov", "qx": 0.0, "qy": 0.0, "qz": 0.0,
                     "qw": 1.0, "x": 1.2, "y": 0.0, "z": 2.0})
        dims.append({"clip_id": c.clip_id, "length": 5.0, "width": 2.0, "height": 1.6,
                     "rear_axle_to_bbox_center": 1.4, "wheelbase": 3.0, "track_width": 1.7})
    for name, rows, index in (("camera_intrinsics", intr, ["clip_id", "camera_name"]),
                              ("sensor_extrinsics", extr, ["clip_id", "sensor_name"]),
                              ("vehicle_dimensions", dims, ["clip_id"])):
        d = root / "calibration" / name
        d.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).set_index(index).to_parquet(d / f"{name}.{tag}.parquet")
