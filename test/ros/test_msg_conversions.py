"""Message conversions and the image bridge (no DDS)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from alpamayo_ros.ros.conversions import (
    CandidateExtras,
    duration_msg,
    express_in_frame,
    make_candidates_msg,
    make_markers,
    make_path,
    rotmat_to_quat_xyzw,
    serialized_header_stamp,
    stamp_to_sec,
    time_msg,
    yaw_to_quat_xyzw,
)
from alpamayo_ros.ros.image_bridge import (
    ImageDecodeError,
    apply_crop,
    compressed_dims,
    cropped_dims,
    decode_image_msg,
    image_dims,
    oversize_reason,
    rgb_to_compressed_msg,
    rgb_to_image_msg,
)


def test_time_round_trip_and_negative_duration() -> None:
    assert stamp_to_sec(time_msg(1700000000.123456789)) == pytest.approx(1700000000.123456789, abs=1e-6)
    t = time_msg(12.5 + 0.1 * 3)
    assert (t.sec, t.nanosec) == (12, 800_000_000)
    d = duration_msg(-0.25)
    assert d.sec == -1 and d.nanosec == 750_000_000


def test_quaternions_match_yaw_and_rotations() -> None:
    yaw = np.array([0.0, 0.5, -2.0, np.pi])
    q = yaw_to_quat_xyzw(yaw)
    c, s = np.cos(yaw), np.sin(yaw)
    r = np.zeros((4, 3, 3))
    r[:, 0, 0], r[:, 0, 1], r[:, 1, 0], r[:, 1, 1], r[:, 2, 2] = c, -s, s, c, 1
    q2 = rotmat_to_quat_xyzw(r)
    np.testing.assert_allclose(np.abs(np.sum(q * q2, axis=-1)), 1.0, atol=1e-12)  # same rotation (±q)


def _traj(frame: str = "base_link", pose=None):
    n = 64
    t = 0.1 * np.arange(1, n + 1)
    xyz = np.stack([np.stack([5.0 * t, 0.1 * k * t, np.zeros(n)], -1) for k in range(3)])
    return express_in_frame(xyz, np.zeros((3, n)), 100.0, 0.1, frame, pose)


def test_path_stamps_frames_and_pose_times() -> None:
    traj = _traj()
    path = make_path(traj, 1)
    assert path.header.frame_id == "base_link" and stamp_to_sec(path.header.stamp) == pytest.approx(100.0)
    times = [stamp_to_sec(p.header.stamp) - 100.0 for p in path.poses]
    np.testing.assert_allclose(times, 0.1 * np.arange(1, 65), atol=1e-6)  # t0+0.1 … t0+6.4
    assert path.poses[9].pose.position.x == pytest.approx(5.0) and path.poses[9].pose.orientation.w == 1.0


def test_odometry_frame_transform() -> None:
    yaw0 = np.pi / 2
    r0 = np.array([[np.cos(yaw0), -np.sin(yaw0), 0], [np.sin(yaw0), np.cos(yaw0), 0], [0, 0, 1]])
    traj = _traj("odom", (np.array([10.0, 20.0, 0.5]), r0))
    p = make_path(traj, 0).poses[9].pose
    assert (p.position.x, p.position.y, p.position.z) == pytest.approx((10.0, 25.0, 0.5))
    assert p.orientation.z == pytest.approx(np.sin(yaw0 / 2)) and p.orientation.w == pytest.approx(np.cos(yaw0 / 2))


def test_candidates_message_and_markers() -> None:
    traj = _traj()
    paths = [make_path(traj, k) for k in range(3)]
    extra = CandidateExtras(scores=[0.1, 0.9, 0.5], selected=1, reasoning=["a", "b", "c"],
                            acceleration=np.zeros((3, 64)), curvature=np.ones((3, 64)), v0=5.0,
                            model_id="m", backend="kinematic", inference_time_s=0.25)
    msg = make_candidates_msg(paths, traj, extra)
    assert len(msg.candidates) == 3 and msg.selected_index == 1 and list(msg.reasoning) == ["a", "b", "c"]
    assert msg.controls[2].curvature[5] == pytest.approx(1.0) and msg.controls[0].dt == pytest.approx(0.1)
    assert msg.inference_time.nanosec == 250_000_000 and not msg.fallback
    markers = make_markers(traj, 1, "because", fallback=True).markers
    assert [m.ns for m in markers] == ["candidates"] * 3 + ["selected", "reasoning"]
    assert markers[-1].text == "[FALLBACK] because" and len(markers[3].points) == 64


def _rgb(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_raw_round_trip(encoding: str) -> None:
    rgb = _rgb()
    np.testing.assert_array_equal(decode_image_msg(rgb_to_image_msg(rgb, encoding)), rgb)


def test_mono_and_png_and_jpeg() -> None:
    rgb = _rgb()
    mono = decode_image_msg(rgb_to_image_msg(rgb, "mono8"))
    assert mono.shape == rgb.shape and np.all(mono[..., 0] == mono[..., 2])
    np.testing.assert_array_equal(decode_image_msg(rgb_to_compressed_msg(rgb, "png")), rgb)
    smooth = np.full((64, 64, 3), (200, 100, 50), np.uint8)
    np.testing.assert_allclose(decode_image_msg(rgb_to_compressed_msg(smooth, "jpeg")), smooth, atol=3)


def test_bad_payloads_raise_clear_errors() -> None:
    msg = rgb_to_image_msg(_rgb(), "rgb8")
    msg.encoding = "yuv422"
    with pytest.raises(ImageDecodeError, match="unsupported image encoding"):
        decode_image_msg(msg)
    msg = rgb_to_image_msg(_rgb(), "rgb8")
    msg.data = msg.data[:100]
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image_msg(msg)
    jpg = rgb_to_compressed_msg(_rgb(), "jpeg")
    jpg.data = jpg.data[: len(jpg.data) // 2]
    with pytest.raises(ImageDecodeError):
        decode_image_msg(jpg)
    with pytest.raises(ImageDecodeError, match="does not fit"):
        apply_crop(_rgb(), (0, 0, 100, 10))
    assert apply_crop(_rgb(), (4, 2, 10, 6)).shape == (6, 10, 3)


def test_fast_path_matches_the_reference_resize_closely() -> None:
    from alpamayo_ros.core.image_preprocess import resize_rgb, smart_resize
    from alpamayo_ros.ros.image_bridge import decode_jpeg_reduced, fast_resize
    from alpamayo_ros.ros.synthetic import pattern_image

    rgb = pattern_image(1080, 1920, 2)
    msg = rgb_to_compressed_msg(rgb, "jpeg", quality=95)
    oh, ow = smart_resize(1080, 1920)
    assert (oh, ow) == (320, 576)
    reduced = decode_jpeg_reduced(msg, 2)
    assert reduced.shape == (540, 960, 3)
    fast = fast_resize(reduced, oh, ow)
    exact = resize_rgb(decode_image_msg(msg), oh, ow, "exact")
    diff = np.abs(fast.astype(np.int16) - exact.astype(np.int16))
    assert fast.shape == exact.shape and diff.mean() < 3.0, diff.mean()
    assert decode_jpeg_reduced(rgb_to_compressed_msg(rgb[:64, :64], "png"), 2) is None  # not a JPEG
    cut = rgb_to_compressed_msg(rgb, "jpeg")
    cut.data = cut.data[: len(cut.data) // 2]
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_jpeg_reduced(cut, 2)


def test_path_cache_reuses_messages_with_fresh_values() -> None:
    from alpamayo_ros.ros.conversions import PathCache

    cache = PathCache()
    first = cache.paths(_traj())
    ids = [id(p.poses[5]) for p in first]
    later = _traj()
    later.t0 = 200.0
    later.xyz = later.xyz + 1.0
    second = cache.paths(later)
    assert [id(p.poses[5]) for p in second] == ids  # same objects
    assert second == [make_path(later, k) for k in range(3)]  # same content as fresh messages
    markers = make_markers(later, 0, "", False, second).markers
    assert markers[0].points[7] == second[0].poses[7].pose.position


@pytest.mark.parametrize("params", [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_OPTIMIZE, 1]],
                         ids=["baseline", "progressive", "optimized"])
def test_jpeg_dimensions_come_from_the_header(params) -> None:
    ok, buf = cv2.imencode(".jpg", np.zeros((123, 457, 3), np.uint8), params)
    data = buf.tobytes()
    exif = b"\xff\xe1" + (2 + 300).to_bytes(2, "big") + b"Exif\x00\x00" + bytes(294)  # an APP1 segment first
    assert compressed_dims(data) == (123, 457)
    assert compressed_dims(data[:2] + exif + data[2:]) == (123, 457)
    assert compressed_dims(data[:40]) is None or compressed_dims(data[:40]) == (123, 457)  # cut: unknown, never wrong
    assert compressed_dims(b"\xff\xd8\x00garbage") is None and compressed_dims(b"") is None


def test_png_dimensions_and_message_dims() -> None:
    png = rgb_to_compressed_msg(np.zeros((77, 33, 3), np.uint8), "png")
    assert image_dims(png) == (77, 33)
    raw = rgb_to_image_msg(np.zeros((5, 7, 3), np.uint8))
    assert image_dims(raw) == (5, 7)


def test_oversize_reason_reads_only_sizes() -> None:
    raw = rgb_to_image_msg(np.zeros((100, 100, 3), np.uint8))  # 30000 bytes
    assert oversize_reason(raw, (100, 100), 30000) == ""
    assert "payload of 30000 bytes" in oversize_reason(raw, (100, 100), 29999)
    claims = rgb_to_image_msg(np.zeros((1, 100, 3), np.uint8))
    claims.height = 1000  # the header claims 1000 rows of 300 bytes
    assert "is 300000 bytes" in oversize_reason(claims, image_dims(claims), 100000)
    jpeg = rgb_to_compressed_msg(np.zeros((1000, 1000, 3), np.uint8))
    assert len(jpeg.data) < 100000 and "decodes to 1000x1000 RGB = 3000000 bytes" in oversize_reason(
        jpeg, image_dims(jpeg), 1000000)


def test_cropped_dims_checks_the_crop() -> None:
    assert cropped_dims(1080, 1920, None) == (1080, 1920)
    assert cropped_dims(1080, 1920, (0, 60, 1920, 960)) == (960, 1920)
    with pytest.raises(ImageDecodeError, match="does not fit a 1920x1080 image"):
        cropped_dims(1080, 1920, (100, 0, 1900, 1080))


def test_header_stamp_is_read_from_the_serialized_message() -> None:
    from rclpy.serialization import serialize_message

    msg = rgb_to_image_msg(np.zeros((4, 4, 3), np.uint8))
    msg.header.stamp = time_msg(1700000000.25)
    msg.header.frame_id = "cam"
    data = serialize_message(msg)
    assert serialized_header_stamp(data) == stamp_to_sec(msg.header.stamp)  # the same float as after deserializing
    big_endian = b"\x00\x00\x00\x00" + (12).to_bytes(4, "big") + (5 * 10**8).to_bytes(4, "big")
    assert serialized_header_stamp(big_endian) == pytest.approx(12.5)
    assert serialized_header_stamp(b"\x00\x07" + data[2:]) is None and serialized_header_stamp(b"\x00\x01") is None
