"""Reading ROS 2 bags without a ROS runtime: validation, damage recovery and message decoding.

Bags are read with `rosbags` (rosbag2 directories, MCAP or sqlite3, or a bare `.mcap`). When the
index or footer of an MCAP file is damaged — a recording cut off by a crash or a full disk — the
file is streamed record by record with `mcap` instead, so every message before the damage is
still used. Any failure while reading raises `BagReadError`, which says where it happened and how
much was read, so a replay can report what it evaluated before the damage.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

log = logging.getLogger(__name__)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ODOM_TYPE = "nav_msgs/msg/Odometry"
STRING_TYPE = "std_msgs/msg/String"


class BagReadError(RuntimeError):
    """The bag could not be opened or read to its end. `messages_read` were delivered before."""

    def __init__(self, path: Path, reason: str, messages_read: int = 0, last_time_ns: int | None = None):
        where = f"after {messages_read} messages"
        if last_time_ns is not None:
            where += f" (last log time {last_time_ns / 1e9:.3f} s)"
        super().__init__(f"bag {path}: {reason} — stopped {where}")
        self.path, self.reason = path, reason
        self.messages_read, self.last_time_ns = messages_read, last_time_ns


@dataclass
class TopicInfo:
    msgtype: str
    count: int | None  # None when the index is unreadable (recovery mode)


@dataclass
class BagInfo:
    path: Path
    storage: str  # mcap | sqlite3
    topics: dict[str, TopicInfo]
    start_ns: int | None
    end_ns: int | None
    damaged: str | None = None  # why the index could not be used (recovery mode), else None

    @property
    def duration_s(self) -> float | None:
        if self.start_ns is None or self.end_ns is None:
            return None
        return (self.end_ns - self.start_ns) / 1e9


@dataclass(frozen=True)
class RawMessage:
    topic: str
    msgtype: str
    log_time_ns: int
    data: bytes


def _mcap_files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(path.glob("*.mcap"))


class BagSource:
    """One bag, opened for reading. Iterate `messages()` once per pass (it reopens the bag)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagReadError(self.path, "no such file or directory")
        self.info = self._open()

    # rosbags wants a rosbag2 directory; AnyReader also takes a bare .mcap file.
    def _reader(self):
        from rosbags.highlevel import AnyReader

        return AnyReader([self.path])

    def _open(self) -> BagInfo:
        try:
            with self._reader() as reader:
                topics = {
                    c.topic: TopicInfo(c.msgtype, c.msgcount) for c in reader.connections
                }
                storage = "mcap" if _mcap_files(self.path) else "sqlite3"
                return BagInfo(self.path, storage, topics, reader.start_time, reader.end_time)
        except Exception as exc:  # rosbags raises several error types; all mean "index unusable"
            if not _mcap_files(self.path):
                raise BagReadError(self.path, f"cannot open: {exc}") from exc
            log.warning("bag %s: index unusable (%s); streaming the MCAP records instead", self.path, exc)
            return self._scan_stream(str(exc))

    def _scan_stream(self, reason: str) -> BagInfo:
        """Recovery mode: learn topics and time range by streaming the file (stops at the damage)."""
        topics: dict[str, TopicInfo] = {}
        start = end = None
        counts: dict[str, int] = {}
        for msg in self._stream_messages(None, raise_at_end=False):
            counts[msg.topic] = counts.get(msg.topic, 0) + 1
            topics.setdefault(msg.topic, TopicInfo(msg.msgtype, None))
            start = msg.log_time_ns if start is None else min(start, msg.log_time_ns)
            end = msg.log_time_ns if end is None else max(end, msg.log_time_ns)
        for topic, n in counts.items():
            topics[topic].count = n
        return BagInfo(self.path, "mcap", topics, start, end, damaged=f"index unusable: {reason}")

    def _stream_messages(self, topics: set[str] | None, raise_at_end: bool = True) -> Iterator[RawMessage]:
        from mcap.records import Channel, Message, Schema
        from mcap.stream_reader import StreamReader

        schemas: dict[int, str] = {}
        channels: dict[int, tuple[str, str]] = {}
        n, last = 0, None
        for file in _mcap_files(self.path):
            try:
                with file.open("rb") as fh:
                    for rec in StreamReader(fh, skip_magic=False).records:
                        if isinstance(rec, Schema):
                            schemas[rec.id] = rec.name
                        elif isinstance(rec, Channel):
                            channels[rec.id] = (rec.topic, schemas.get(rec.schema_id, ""))
                        elif isinstance(rec, Message) and rec.channel_id in channels:
                            topic, msgtype = channels[rec.channel_id]
                            if topics is None or topic in topics:
                                n, last = n + 1, rec.log_time
                                yield RawMessage(topic, msgtype, rec.log_time, bytes(rec.data))
            except Exception as exc:
                if raise_at_end:
                    raise BagReadError(self.path, f"{file.name} is truncated or corrupted ({type(exc).__name__}: {exc})", n, last) from exc
                return

    def messages(self, topics: Iterable[str] | None = None) -> Iterator[RawMessage]:
        """Messages in log-time order. Raises BagReadError at the first unreadable point."""
        wanted = set(topics) if topics is not None else None
        if self.info.damaged:
            yield from self._stream_messages(wanted)
            # A stream that ends cleanly after a damaged index still lost its tail.
            return
        n, last = 0, None
        try:
            with self._reader() as reader:
                conns = [c for c in reader.connections if wanted is None or c.topic in wanted]
                for conn, t, raw in reader.messages(connections=conns):
                    n, last = n + 1, t
                    yield RawMessage(conn.topic, conn.msgtype, t, bytes(raw))
        except BagReadError:
            raise
        except Exception as exc:
            raise BagReadError(self.path, f"read failed ({type(exc).__name__}: {exc})", n, last) from exc


# ----------------------------------------------------------------------------------------------
# Decoding (rosbags' typestore: plain dataclasses, no rclpy needed).

_TYPESTORE = None


def typestore():
    """The Kilted typestore plus this package's messages (for recorded output bags)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        from rosbags.typesys import Stores, get_types_from_msg, get_typestore

        from alpamayo_ros.tools.planner_setup import package_file

        ts = get_typestore(Stores.ROS2_KILTED)
        types: dict = {}
        for name in ("CandidateControls", "TrajectoryCandidates"):
            f = package_file(f"msg/{name}.msg")
            if f.exists():
                types.update(get_types_from_msg(f.read_text(), f"alpamayo_ros/msg/{name}"))
        if types:
            ts.register(types)
        _TYPESTORE = ts
    return _TYPESTORE


def deserialize(msg: RawMessage):
    return typestore().deserialize_cdr(msg.data, msg.msgtype)


def stamp_s(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


@dataclass
class OdometrySample:
    stamp_s: float
    position: np.ndarray  # (3,)
    orientation_xyzw: np.ndarray  # (4,)
    linear_velocity: np.ndarray  # (3,) body frame (child_frame_id), REP-105
    frame_id: str = "odom"


def decode_odometry(msg: RawMessage) -> OdometrySample:
    m = deserialize(msg)
    p, q, v = m.pose.pose.position, m.pose.pose.orientation, m.twist.twist.linear
    return OdometrySample(
        stamp_s(m.header), np.array([p.x, p.y, p.z]), np.array([q.x, q.y, q.z, q.w]),
        np.array([v.x, v.y, v.z]), m.header.frame_id,
    )


class ImageDecodeError(ValueError):
    pass


_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


@dataclass
class DecodedImage:
    stamp_s: float
    rgb: np.ndarray = field(repr=False)  # uint8 (H, W, 3)


def decode_image(msg: RawMessage) -> DecodedImage:
    """sensor_msgs Image (rgb8/bgr8/rgba8/bgra8/mono8) or CompressedImage (JPEG/PNG) → RGB."""
    m = deserialize(msg)
    stamp = stamp_s(m.header)
    if msg.msgtype.endswith("CompressedImage"):
        bgr = cv2.imdecode(np.asarray(m.data, dtype=np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ImageDecodeError(f"{msg.topic} @ {stamp:.3f}: cannot decode {m.format!r} image ({len(m.data)} bytes)")
        return DecodedImage(stamp, np.ascontiguousarray(bgr[:, :, ::-1]))
    ch = _CHANNELS.get(m.encoding)
    if ch is None:
        raise ImageDecodeError(f"{msg.topic}: unsupported encoding {m.encoding!r} (use one of {sorted(_CHANNELS)})")
    data = np.asarray(m.data, dtype=np.uint8)
    if m.step < m.width * ch or data.size < m.step * m.height:
        raise ImageDecodeError(f"{msg.topic} @ {stamp:.3f}: {data.size} bytes for {m.height}x{m.width} {m.encoding}")
    arr = data[: m.step * m.height].reshape(m.height, m.step)[:, : m.width * ch].reshape(m.height, m.width, ch)
    if m.encoding == "mono8":
        arr = np.repeat(arr, 3, axis=2)
    elif m.encoding.startswith("bgr"):
        arr = arr[:, :, 2::-1]
    else:
        arr = arr[:, :, :3]
    return DecodedImage(stamp, np.ascontiguousarray(arr))


@dataclass
class ValidationReport:
    errors: list[str]  # the bag cannot feed the planner (missing topics, wrong types)
    warnings: list[str]  # usable, with caveats (too short to score, damaged tail)
    info: BagInfo

    @property
    def ok(self) -> bool:
        return not self.errors and not self.warnings

    @property
    def problems(self) -> list[str]:
        return self.errors + self.warnings


def validate_bag(
    source: BagSource, camera_topics: Iterable[str], odom_topic: str, min_duration_s: float = 8.0
) -> ValidationReport:
    """Check that a bag can feed the planner: topics present with the right types, enough time."""
    info, errors, warnings = source.info, [], []
    for topic in camera_topics:
        t = info.topics.get(topic)
        if t is None:
            errors.append(f"camera topic {topic} is missing (bag has {sorted(info.topics)})")
        elif t.msgtype not in IMAGE_TYPES:
            errors.append(f"camera topic {topic} has type {t.msgtype}, expected one of {IMAGE_TYPES}")
        elif t.count == 0:
            errors.append(f"camera topic {topic} has no messages")
    t = info.topics.get(odom_topic)
    if t is None:
        errors.append(f"odometry topic {odom_topic} is missing (bag has {sorted(info.topics)})")
    elif t.msgtype != ODOM_TYPE:
        errors.append(f"odometry topic {odom_topic} has type {t.msgtype}, expected {ODOM_TYPE}")
    dur = info.duration_s
    if dur is not None and dur < min_duration_s:
        warnings.append(f"bag lasts {dur:.1f} s; scoring needs >= {min_duration_s:.1f} s (1.5 s history + 6.4 s horizon)")
    if info.damaged:
        warnings.append(f"bag is damaged ({info.damaged}); only the readable part is used")
    return ValidationReport(errors, warnings, info)
