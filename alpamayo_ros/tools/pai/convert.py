"""One PhysicalAI-AV clip -> one rosbag2 MCAP that the planner (node or offline replay) reads.

What goes into the bag (topics follow config/planner.yaml, so replay needs no remapping):

- `/camera/<name>/image_raw/compressed` (`sensor_msgs/CompressedImage`, JPEG by default): the 4
  model cameras, decoded from the clip's MP4 with PyAV and re-encoded; every frame (native 30 Hz)
  or, with `camera_rate_hz=10`, the latest frame at or before each 0.1 s of clip time (so the
  frames the reference picks at t0 = k·0.1 s are all there). Stamp = frame timestamp + time origin;
  frame_id = the dataset's camera name (an optical frame: z out of the lens, x right, y down).
- `/camera/<name>/camera_info` (`sensor_msgs/CameraInfo`, one per image): the f-theta intrinsics
  fitted by ROS's `equidistant` model (ftheta.py says what that loses).
- `/odom` (`nav_msgs/Odometry`, one per egomotion row, ~100 Hz): frame `odom` = the clip's anchor
  frame (REP-105), child `base_link` = the rig (rear axle on the ground). Pose straight from the
  table; linear twist rotated from the anchor frame into base_link (REP-105 twists are in the
  child frame); angular twist from the quaternions (the table has none). Acceleration and
  curvature have no Odometry field and are not carried.
- `/tf` (odom -> base_link per odometry row) and `/tf_static` (base_link -> each camera, the
  dataset's sensor pose in the rig frame), unless disabled.
- metadata `custom_data`: clip id, chunk, the time origin (bag time of clip time 0, which replay
  uses to place the reference protocol's t0 = 5.1 s), and the exact f-theta intrinsics.

Bag time = `time_origin_ns` + clip microseconds × 1000 (a fixed, positive epoch: the first frame
of a clip can lie slightly before clip time 0). Messages are written in time order, log time =
header stamp. A bag is written into a scratch directory and moved into place when complete.
"""

from __future__ import annotations

import heapq
import io
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from alpamayo_ros.core.geometry import quat_conjugate, quat_multiply, quat_to_rotmat
from alpamayo_ros.tools.pai.dataset import (
    MODEL_CAMERA_FEATURES,
    CameraStream,
    Egomotion,
    FThetaIntrinsics,
    PaiDataset,
    PaiFormatError,
    SensorPose,
)
from alpamayo_ros.tools.pai.ftheta import EquidistantFit, camera_info_fields, fit_equidistant
from alpamayo_ros.tools.protocol import META_CLIP_ID, META_PREFIX, META_TIME_ORIGIN
from alpamayo_ros.tools.topics import DEFAULT_CAMERAS, DEFAULT_ODOM_TOPIC, CameraTopic

log = logging.getLogger(__name__)

PAI_TIME_ORIGIN_NS = 1_700_000_000 * 1_000_000_000  # bag time of clip time 0 (as the demo bag's epoch)
IMPORTER_VERSION = 1
ODOM_FRAME, RIG_FRAME = "odom", "base_link"
TF_TOPIC, TF_STATIC_TOPIC = "/tf", "/tf_static"
MIN_DURATION_S = 8.0  # 1.5 s history (+0.1) + 6.4 s horizon: shorter clips cannot be scored
PROTOCOL_T0_S = 5.1  # the reference protocol's t0; warned about when a clip cannot serve it
IMAGE_FORMATS = ("jpeg", "png")
CAMERA_RATES_HZ = (10, 30)


class ClipImportError(RuntimeError):
    """A clip that cannot be converted (too short, video and timestamps disagree, bad data)."""


@dataclass(frozen=True)
class ImportOptions:
    camera_rate_hz: int = 30  # 30: every frame; 10: latest frame at or before each 0.1 s of clip time
    image_format: str = "jpeg"  # jpeg | png (lossless, for pixel parity with the reference decoder)
    jpeg_quality: int = 90
    time_origin_ns: int = PAI_TIME_ORIGIN_NS
    write_tf: bool = True  # /tf odom -> base_link and /tf_static base_link -> cameras
    calibration: bool = True  # CameraInfo + /tf_static (needs camera_intrinsics and sensor_extrinsics)
    min_duration_s: float = MIN_DURATION_S
    overwrite: bool = False
    cameras: tuple[CameraTopic, ...] = DEFAULT_CAMERAS
    odom_topic: str = DEFAULT_ODOM_TOPIC

    def __post_init__(self) -> None:
        if self.camera_rate_hz not in CAMERA_RATES_HZ:
            raise ValueError(f"camera_rate_hz must be one of {CAMERA_RATES_HZ} (native or the model's rate), "
                             f"got {self.camera_rate_hz}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1..100, got {self.jpeg_quality}")
        if self.time_origin_ns <= 0:
            raise ValueError("time_origin_ns must be positive")
        unknown = [c.camera_id for c in self.cameras if c.camera_id not in MODEL_CAMERA_FEATURES]
        if unknown:
            raise ValueError(f"camera ids {unknown} are not model cameras {sorted(MODEL_CAMERA_FEATURES)}")


@dataclass
class ClipBag:
    clip_id: str
    path: Path
    counts: dict[str, int]
    duration_s: float
    size_bytes: int
    warnings: list[str] = field(default_factory=list)


def camera_info_topic(image_topic: str) -> str:
    """image_transport naming: /cam/image_raw/compressed -> /cam/camera_info."""
    base = image_topic.removesuffix("/compressed")
    return base.rsplit("/", 1)[0] + "/camera_info"


def stamp_ns(t_us: np.ndarray | int, origin_ns: int) -> np.ndarray:
    return origin_ns + np.asarray(t_us, dtype=np.int64) * 1000


# ----------------------------------------------------------------------------------------------
# Egomotion -> body-frame twist


def _rotation_vector(q: np.ndarray) -> np.ndarray:
    """Axis-angle vectors (..., 3) of unit quaternions (..., 4), angle in [0, π]."""
    q = np.where(q[..., 3:] < 0, -q, q)
    s = np.linalg.norm(q[..., :3], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(s, q[..., 3:])
    scale = np.where(s > 1e-12, angle / np.maximum(s, 1e-300), 2.0)  # small angles: 2·xyz
    return q[..., :3] * scale


def body_twist(ego: Egomotion) -> tuple[np.ndarray, np.ndarray]:
    """(linear (N, 3), angular (N, 3)) in the rig frame of each row.

    Linear: Rᵀ·v of the anchor-frame velocity. Angular: the rotation between neighbouring rows in
    the earlier row's body frame over their time step, averaged over the two sides of each row
    (one side at the ends); exact for a constant body rate.
    """
    rot = quat_to_rotmat(ego.quaternion_xyzw)
    linear = np.einsum("nji,nj->ni", rot, ego.velocity)
    n = len(ego.timestamp_us)
    if n < 2:
        return linear, np.zeros((n, 3))
    q = ego.quaternion_xyzw / np.linalg.norm(ego.quaternion_xyzw, axis=1, keepdims=True)
    rel = quat_multiply(quat_conjugate(q[:-1]), q[1:])
    dt = np.diff(ego.timestamp_us).astype(np.float64) * 1e-6
    rate = _rotation_vector(rel) / dt[:, None]  # (N-1, 3): body rate over each interval
    angular = np.empty((n, 3))
    angular[0], angular[-1] = rate[0], rate[-1]
    angular[1:-1] = 0.5 * (rate[:-1] + rate[1:])
    return linear, angular


def subsample_to_grid(ts_us: np.ndarray, rate_hz: int) -> np.ndarray:
    """Frame indices to keep: all (native), or the latest frame at or before each 1/rate of clip
    time (the reference's frame rule, so its frames at t0 − 0.3 … t0 survive for t0 on the grid)."""
    if rate_hz >= 30:
        return np.arange(len(ts_us))
    step = 1_000_000 // rate_hz
    grid = np.arange(int(np.ceil(ts_us[0] / step)) * step, ts_us[-1] + 1, step, dtype=np.int64)
    idx = np.searchsorted(ts_us, grid, side="right") - 1
    return np.unique(idx[idx >= 0])


# ----------------------------------------------------------------------------------------------
# Video


def count_video_frames(video: bytes, where: str) -> int:
    """Frames in the first video stream: the container's count, else counted packets (no decoding)."""
    import av

    try:
        with av.open(io.BytesIO(video)) as container:
            if not container.streams.video:
                raise ClipImportError(f"{where}: no video stream")
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            return sum(1 for p in container.demux(stream) if p.size)
    except ClipImportError:
        raise
    except Exception as exc:  # PyAV raises av.error.* subclasses of OSError/ValueError
        raise ClipImportError(f"{where}: cannot open the video ({type(exc).__name__}: {exc})") from exc


def iter_video_frames(video: bytes, keep: np.ndarray, where: str) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, RGB uint8 (H, W, 3)) of the kept frames, decoded in presentation order.

    RGB via PyAV's `to_ndarray(format="rgb24")`, the reference decoder's own call.
    """
    import av

    wanted = set(int(i) for i in keep)
    last = max(wanted) if wanted else -1
    index = -1
    try:
        with av.open(io.BytesIO(video)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_type = "AUTO"  # frame + slice threads
            for frame in container.decode(stream):
                index += 1
                if index in wanted:
                    yield index, frame.to_ndarray(format="rgb24")
                if index >= last:
                    return
    except Exception as exc:
        raise ClipImportError(f"{where}: decoding failed after frame {index} ({type(exc).__name__}: {exc})") from exc
    raise ClipImportError(f"{where}: the video ended after {index + 1} frames, but frame {last} is needed")


def encode_image(rgb: np.ndarray, image_format: str, jpeg_quality: int) -> bytes:
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    if image_format == "png":
        ok, buf = cv2.imencode(".png", bgr)
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
    if not ok:
        raise ClipImportError(f"OpenCV could not encode a {image_format} image of shape {rgb.shape}")
    return buf.tobytes()


# ----------------------------------------------------------------------------------------------
# Messages (rosbags typestore: no ROS runtime needed)


class _Messages:
    def __init__(self) -> None:
        from alpamayo_ros.tools.bag_io import typestore

        self.ts = typestore()
        self.t = self.ts.types

    def time(self, ns: int) -> Any:
        return self.t["builtin_interfaces/msg/Time"](sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))

    def header(self, ns: int, frame_id: str) -> Any:
        return self.t["std_msgs/msg/Header"](stamp=self.time(ns), frame_id=frame_id)

    def vector3(self, v: Sequence[float]) -> Any:
        return self.t["geometry_msgs/msg/Vector3"](x=float(v[0]), y=float(v[1]), z=float(v[2]))

    def quaternion(self, q: Sequence[float]) -> Any:
        return self.t["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))

    def transform(self, ns: int, parent: str, child: str, t: Sequence[float], q: Sequence[float]) -> Any:
        return self.t["geometry_msgs/msg/TransformStamped"](
            header=self.header(ns, parent), child_frame_id=child,
            transform=self.t["geometry_msgs/msg/Transform"](translation=self.vector3(t), rotation=self.quaternion(q)))

    def odometry(self, ns: int, p: np.ndarray, q: np.ndarray, v: np.ndarray, w: np.ndarray) -> bytes:
        t = self.t
        cov = np.zeros(36)  # unknown (the dataset gives no uncertainty)
        msg = t["nav_msgs/msg/Odometry"](
            header=self.header(ns, ODOM_FRAME), child_frame_id=RIG_FRAME,
            pose=t["geometry_msgs/msg/PoseWithCovariance"](
                pose=t["geometry_msgs/msg/Pose"](
                    position=t["geometry_msgs/msg/Point"](x=float(p[0]), y=float(p[1]), z=float(p[2])),
                    orientation=self.quaternion(q)),
                covariance=cov),
            twist=t["geometry_msgs/msg/TwistWithCovariance"](
                twist=t["geometry_msgs/msg/Twist"](linear=self.vector3(v), angular=self.vector3(w)), covariance=cov))
        return self.ts.serialize_cdr(msg, "nav_msgs/msg/Odometry")

    def tf(self, transforms: list[Any]) -> bytes:
        return self.ts.serialize_cdr(self.t["tf2_msgs/msg/TFMessage"](transforms=transforms), "tf2_msgs/msg/TFMessage")

    def compressed_image(self, ns: int, frame_id: str, fmt: str, data: bytes) -> bytes:
        msg = self.t["sensor_msgs/msg/CompressedImage"](header=self.header(ns, frame_id), format=fmt,
                                                         data=np.frombuffer(data, dtype=np.uint8))
        return self.ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage")

    def camera_info(self, ns: int, frame_id: str, fields: dict) -> bytes:
        t = self.t
        msg = t["sensor_msgs/msg/CameraInfo"](
            header=self.header(ns, frame_id), binning_x=0, binning_y=0,
            roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
            **fields)
        return self.ts.serialize_cdr(msg, "sensor_msgs/msg/CameraInfo")


def _latched_qos() -> Any:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    infinite = QosTime(9223372036, 854775807)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, infinite,
               infinite, QosLiveliness.AUTOMATIC, infinite, False)


# ----------------------------------------------------------------------------------------------
# One clip


@dataclass
class _Camera:
    topic: CameraTopic
    stream: CameraStream
    keep: np.ndarray  # frame indices written
    intrinsics: FThetaIntrinsics | None = None
    fit: EquidistantFit | None = None
    info_fields: dict | None = None

    @property
    def frame_id(self) -> str:
        return self.stream.feature


def _load_cameras(dataset: PaiDataset, clip_id: str, opts: ImportOptions) -> list[_Camera]:
    cams = []
    for topic in opts.cameras:
        stream = dataset.camera(clip_id, MODEL_CAMERA_FEATURES[topic.camera_id])
        frames = count_video_frames(stream.video, stream.source)
        if frames != len(stream.timestamp_us):
            raise ClipImportError(f"{stream.source}: the video has {frames} frames but its timestamps table has "
                                  f"{len(stream.timestamp_us)} rows (they must match one to one)")
        cams.append(_Camera(topic, stream, subsample_to_grid(stream.timestamp_us, opts.camera_rate_hz)))
    return cams


def _check_coverage(clip_id: str, ego: Egomotion, cams: list[_Camera], opts: ImportOptions) -> tuple[float, list[str]]:
    """Seconds that egomotion and every camera cover together; ClipImportError when too short."""
    starts = [ego.timestamp_us[0]] + [c.stream.timestamp_us[c.keep[0]] for c in cams]
    ends = [ego.timestamp_us[-1]] + [c.stream.timestamp_us[c.keep[-1]] for c in cams]
    start, end = max(starts), min(ends)
    duration = (end - start) * 1e-6
    if duration < opts.min_duration_s:
        raise ClipImportError(
            f"clip {clip_id} is too short: egomotion and the cameras overlap for {duration:.2f} s "
            f"({start * 1e-6:.2f} … {end * 1e-6:.2f} s of clip time); replay needs >= {opts.min_duration_s:.1f} s "
            "(1.5 s of history + 6.4 s of future)")
    warnings = []
    t0 = int(PROTOCOL_T0_S * 1e6)
    if start > t0 - 1_500_000 - 300_000 or ego.timestamp_us[-1] < t0 + 6_400_000:
        warnings.append(f"clip {clip_id} covers {start * 1e-6:.2f} … {end * 1e-6:.2f} s: the reference protocol's "
                        f"t0 = {PROTOCOL_T0_S} s (1.5 s history, frames from t0 − 0.3 s, 6.4 s future) cannot be scored")
    return duration, warnings


def _attach_calibration(dataset: PaiDataset, clip_id: str, cams: list[_Camera]) -> dict[str, SensorPose]:
    intr = dataset.intrinsics(clip_id)
    extr = dataset.extrinsics(clip_id)
    missing = [c.frame_id for c in cams if c.frame_id not in intr or c.frame_id not in extr]
    if missing:
        raise PaiFormatError(f"clip {clip_id}: no calibration for {missing} (intrinsics for {sorted(intr)}, "
                             f"extrinsics for {sorted(extr)}); pass calibration=False (--no-calibration) to skip it")
    for c in cams:
        c.intrinsics = intr[c.frame_id]
        c.fit = fit_equidistant(c.intrinsics)
    return extr


def _odometry_events(ego: Egomotion, opts: ImportOptions, msgs: _Messages) -> Iterator[tuple]:
    linear, angular = body_twist(ego)
    stamps = stamp_ns(ego.timestamp_us, opts.time_origin_ns)
    for i, ns in enumerate(stamps):
        ns = int(ns)
        p, q = ego.position[i], ego.quaternion_xyzw[i]
        yield ns, 0, opts.odom_topic, msgs.odometry(ns, p, q, linear[i], angular[i])
        if opts.write_tf:
            yield ns, 1, TF_TOPIC, msgs.tf([msgs.transform(ns, ODOM_FRAME, RIG_FRAME, p, q)])


def _camera_events(cam: _Camera, order: int, opts: ImportOptions, msgs: _Messages,
                   on_frame: Callable[[], None]) -> Iterator[tuple]:
    stamps = stamp_ns(cam.stream.timestamp_us, opts.time_origin_ns)
    info_topic = camera_info_topic(cam.topic.topic)
    for index, rgb in iter_video_frames(cam.stream.video, cam.keep, cam.stream.source):
        ns = int(stamps[index])
        data = encode_image(rgb, opts.image_format, opts.jpeg_quality)
        yield ns, 2 + 2 * order, cam.topic.topic, msgs.compressed_image(ns, cam.frame_id, opts.image_format, data)
        if cam.intrinsics is not None and cam.fit is not None:
            if cam.info_fields is None:
                cam.info_fields = camera_info_fields(cam.intrinsics, cam.fit, rgb.shape[1], rgb.shape[0])
            yield ns, 3 + 2 * order, info_topic, msgs.camera_info(ns, cam.frame_id, cam.info_fields)
        on_frame()


def _metadata(clip_id: str, chunk: int, cams: list[_Camera], opts: ImportOptions) -> dict[str, str]:
    meta = {
        "source": "nvidia/PhysicalAI-Autonomous-Vehicles",
        "chunk": str(chunk),
        "camera_rate_hz": str(opts.camera_rate_hz),
        "image_format": opts.image_format,
        "importer_version": str(IMPORTER_VERSION),
    }
    intr = {}
    for c in cams:
        if c.intrinsics is not None and c.fit is not None:
            i, f = c.intrinsics, c.fit
            intr[c.frame_id] = {"model": "ftheta", "width": i.width, "height": i.height, "cx": i.cx, "cy": i.cy,
                                "fw_poly": list(i.fw_poly), "bw_poly": list(i.bw_poly),
                                "equidistant_fit": {"f": f.focal_px, "k": list(f.k), "theta_max_rad": f.theta_max_rad,
                                                    "max_error_px": f.max_error_px}}
    if intr:
        meta["camera_intrinsics"] = json.dumps(intr, sort_keys=True)
    return {META_CLIP_ID: clip_id, META_TIME_ORIGIN: str(opts.time_origin_ns)} | {META_PREFIX + k: v for k, v in meta.items()}


def import_clip(dataset: PaiDataset, clip_id: str, out_dir: str | Path, opts: ImportOptions | None = None,
                on_frame: Callable[[int, int], None] | None = None) -> ClipBag:
    """Convert one clip to `out_dir/<clip_id>` (rosbag2 directory, one MCAP).

    Raises PaiFormatError (missing or malformed dataset files) or ClipImportError (unusable clip),
    in both cases before anything is written; FileExistsError when the bag exists and not overwrite.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    opts = opts or ImportOptions()
    out = Path(out_dir) / clip_id
    if out.exists() and not opts.overwrite:
        raise FileExistsError(f"{out} exists (overwrite to replace it)")
    entry = dataset.clip(clip_id)
    ego = dataset.egomotion(clip_id)
    cams = _load_cameras(dataset, clip_id, opts)
    duration, warnings = _check_coverage(clip_id, ego, cams, opts)
    extrinsics = _attach_calibration(dataset, clip_id, cams) if opts.calibration else {}
    for c in cams:
        if c.fit is not None and c.fit.max_error_px > 1.0:
            warnings.append(f"{c.frame_id}: the equidistant CameraInfo deviates from the f-theta model by up to "
                            f"{c.fit.max_error_px:.2f} px (exact coefficients in the bag metadata)")
    msgs = _Messages()
    total = sum(len(c.keep) for c in cams)
    done = [0]

    def frame_written() -> None:
        done[0] += 1
        if on_frame is not None:
            on_frame(done[0], total)

    scratch = Path(out_dir) / ".partial" / clip_id
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    try:
        with Writer(scratch, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            for key, value in _metadata(clip_id, entry.chunk, cams, opts).items():
                writer.set_custom_data(key, value)
            conns = {opts.odom_topic: writer.add_connection(opts.odom_topic, "nav_msgs/msg/Odometry", typestore=msgs.ts)}
            for c in cams:
                conns[c.topic.topic] = writer.add_connection(c.topic.topic, "sensor_msgs/msg/CompressedImage",
                                                             typestore=msgs.ts)
                if c.intrinsics is not None:
                    topic = camera_info_topic(c.topic.topic)
                    conns[topic] = writer.add_connection(topic, "sensor_msgs/msg/CameraInfo", typestore=msgs.ts)
            if opts.write_tf:
                conns[TF_TOPIC] = writer.add_connection(TF_TOPIC, "tf2_msgs/msg/TFMessage", typestore=msgs.ts)
            streams = [_odometry_events(ego, opts, msgs)]
            streams += [_camera_events(c, i, opts, msgs, frame_written) for i, c in enumerate(cams)]
            if opts.write_tf and extrinsics:
                conns[TF_STATIC_TOPIC] = writer.add_connection(TF_STATIC_TOPIC, "tf2_msgs/msg/TFMessage",
                                                               typestore=msgs.ts, offered_qos_profiles=[_latched_qos()])
                streams.append(_tf_static_event(_first_stamp(ego, cams, opts), cams, extrinsics, msgs))
            for ns, _, topic, data in heapq.merge(*streams, key=lambda e: (e[0], e[1])):
                writer.write(conns[topic], ns, data)
                counts[topic] = counts.get(topic, 0) + 1
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch.rename(out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            scratch.parent.rmdir()
        except OSError:
            pass
    for w in warnings:
        log.info("%s", w)  # returned to the caller, who reports them
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ClipBag(clip_id, out, counts, duration, size, warnings)


def _first_stamp(ego: Egomotion, cams: list[_Camera], opts: ImportOptions) -> int:
    first_us = min([int(ego.timestamp_us[0])] + [int(c.stream.timestamp_us[c.keep[0]]) for c in cams])
    return int(stamp_ns(first_us, opts.time_origin_ns))


def _tf_static_event(ns: int, cams: list[_Camera], extrinsics: dict[str, SensorPose],
                     msgs: _Messages) -> Iterator[tuple]:
    """base_link -> every camera, once, first in the bag (latched on playback)."""
    transforms = [msgs.transform(ns, RIG_FRAME, c.frame_id, extrinsics[c.frame_id].translation,
                                 extrinsics[c.frame_id].quaternion_xyzw) for c in cams]
    yield ns, -1, TF_STATIC_TOPIC, msgs.tf(transforms)


# ----------------------------------------------------------------------------------------------
# Many clips


@dataclass
class ImportSummary:
    bags: list[ClipBag] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # bag already there (no overwrite)
    failed: dict[str, str] = field(default_factory=dict)  # clip id -> error


def import_clips(dataset: PaiDataset, clip_ids: Sequence[str], out_dir: str | Path, opts: ImportOptions | None = None,
                 on_clip: Callable[[str, int, int], None] | None = None,
                 on_frame: Callable[[int, int], None] | None = None) -> ImportSummary:
    """Convert clips one after the other; a clip that fails is reported and the others go on.
    Existing bags are kept (resumable) unless opts.overwrite."""
    opts = opts or ImportOptions()
    summary = ImportSummary()
    for i, clip_id in enumerate(clip_ids):
        if on_clip is not None:
            on_clip(clip_id, i, len(clip_ids))
        if (Path(out_dir) / clip_id).exists() and not opts.overwrite:
            summary.skipped.append(clip_id)
            continue
        try:
            summary.bags.append(import_clip(dataset, clip_id, out_dir, opts, on_frame))
        except (PaiFormatError, ClipImportError) as exc:
            log.error("%s", exc)
            summary.failed[clip_id] = str(exc)
    return summary
