"""`alpamayo-ros import-pai`: synthetic PhysicalAI-AV clips in the dataset's exact layout
(pai_fixture.py) -> rosbag2 MCAP. Odometry equals the egomotion table after the frame change,
camera stamps equal the frame timestamps plus the time origin, every image is the right frame,
calibration lands in CameraInfo and /tf_static, and bad input fails clearly."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from pai_fixture import FixtureClip, camera_pose, frame_index_of, ftheta_row, write_pai_dataset

from alpamayo_ros.tools.bag_io import BagSource, decode_image, deserialize
from alpamayo_ros.tools.cli import main
from alpamayo_ros.tools.pai.convert import (
    PAI_TIME_ORIGIN_NS,
    ClipImportError,
    ImportOptions,
    body_twist,
    import_clip,
)
from alpamayo_ros.tools.pai.dataset import MODEL_CAMERA_FEATURES, PaiDataset, PaiFormatError
from alpamayo_ros.tools.pai.ftheta import fit_equidistant
from alpamayo_ros.tools.protocol import bag_custom_data, clip_time_origin_s
from alpamayo_ros.tools.topics import DEFAULT_CAMERAS

pytest.importorskip("av")
pytest.importorskip("pandas")

ARC = FixtureClip("0a1b2c3d-arc", chunk=0, duration_s=10.0, speed_mps=8.0, yaw_rate=0.15, pitch=0.03, seed=1)
STRAIGHT = FixtureClip("0a1b2c3d-straight", chunk=0, duration_s=8.5, speed_mps=10.0, seed=2)
SHORT = FixtureClip("0a1b2c3d-short", chunk=1, duration_s=6.0, seed=3)
MISMATCH = FixtureClip("0a1b2c3d-mismatch", chunk=1, duration_s=8.5, extra_timestamp_rows=2, seed=4)
NO_VX = FixtureClip("0a1b2c3d-novx", chunk=2, duration_s=8.5, drop_egomotion_columns=("vx",), seed=5)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pai_dataset(tmp_path_factory.mktemp("pai") / "PhysicalAI-Autonomous-Vehicles",
                             [ARC, STRAIGHT, SHORT, MISMATCH, NO_VX])


@pytest.fixture(scope="module")
def arc_bag(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return import_clip(PaiDataset(dataset), ARC.clip_id, tmp_path_factory.mktemp("bags30")).path


def _messages(bag: Path, topic: str) -> list:
    return [(m, deserialize(m)) for m in BagSource(bag).messages([topic])]


def _stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def test_odometry_is_the_egomotion_table_with_the_twist_in_the_body_frame(arc_bag: Path) -> None:
    odom = _messages(arc_bag, "/odom")
    assert ARC.egomotion_us is not None and len(odom) == len(ARC.egomotion_us)
    t = ARC.egomotion_us * 1e-6
    pos, rot = ARC.position(t), ARC.rotation(t)
    from alpamayo_ros.core.geometry import quat_to_rotmat

    body_w = ARC.body_angular_velocity()
    for i, (raw, m) in enumerate(odom):
        assert _stamp_ns(m.header) == raw.log_time_ns == PAI_TIME_ORIGIN_NS + int(ARC.egomotion_us[i]) * 1000
        assert m.header.frame_id == "odom" and m.child_frame_id == "base_link"
        p, q = m.pose.pose.position, m.pose.pose.orientation
        np.testing.assert_allclose([p.x, p.y, p.z], pos[i], atol=1e-6)
        np.testing.assert_allclose(quat_to_rotmat([q.x, q.y, q.z, q.w]), rot[i], atol=1e-6)
        v, w = m.twist.twist.linear, m.twist.twist.angular
        # Body frame (REP-105): the rig moves along its own x axis at the set speed, whatever the
        # heading and grade; the body rate is the constant Ry(pitch)ᵀ·(0, 0, ω).
        np.testing.assert_allclose([v.x, v.y, v.z], [ARC.speed_mps, 0.0, 0.0], atol=1e-6)
        np.testing.assert_allclose([w.x, w.y, w.z], body_w, atol=1e-6)
    # /tf carries the same pose, odom -> base_link, at the same stamps.
    tf = _messages(arc_bag, "/tf")
    assert len(tf) == len(odom)
    tr = tf[7][1].transforms[0]
    assert (tr.header.frame_id, tr.child_frame_id) == ("odom", "base_link")
    assert _stamp_ns(tr.header) == _stamp_ns(odom[7][1].header)
    np.testing.assert_allclose([tr.transform.translation.x, tr.transform.translation.y], pos[7, :2], atol=1e-9)


def test_body_twist_rotates_the_anchor_velocity() -> None:
    """Rᵀ·v on a hand-made two-row table: heading 90° left, moving along anchor +y."""
    from alpamayo_ros.tools.pai.dataset import Egomotion

    s = np.sqrt(0.5)
    ego = Egomotion(np.array([0, 10_000]), np.zeros((2, 3)), np.array([[0, 0, s, s], [0, 0, s, s]]),
                    np.array([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]]), np.zeros((2, 3)), np.zeros(2))
    linear, angular = body_twist(ego)
    np.testing.assert_allclose(linear, [[5.0, 0.0, 0.0]] * 2, atol=1e-12)
    np.testing.assert_allclose(angular, 0.0, atol=1e-12)


def test_camera_stamps_are_the_frame_timestamps_plus_the_origin_and_every_frame_is_there(arc_bag: Path) -> None:
    for cam in DEFAULT_CAMERAS:  # the topics of config/planner.yaml: replay needs no remapping
        feature = MODEL_CAMERA_FEATURES[cam.camera_id]
        msgs = _messages(arc_bag, cam.topic)
        expected = PAI_TIME_ORIGIN_NS + ARC.frame_us[feature] * 1000
        assert [_stamp_ns(m.header) for _, m in msgs] == expected.tolist(), feature
        assert all(raw.log_time_ns == _stamp_ns(m.header) for raw, m in msgs)
        assert {m.format for _, m in msgs} == {"jpeg"} and {m.header.frame_id for _, m in msgs} == {feature}
        for i in (0, 1, 150, len(msgs) - 1):  # the image at stamp i shows frame i
            assert frame_index_of(decode_image(msgs[i][0]).rgb) == i % 256, (feature, i)
    # The first frame lies before clip time 0: stamps stay positive thanks to the origin.
    assert ARC.frame_us["camera_cross_left_120fov"][0] < 0


def test_ten_hz_keeps_the_latest_frame_at_or_before_each_tenth_of_a_second(dataset: Path, tmp_path: Path) -> None:
    bag = import_clip(PaiDataset(dataset), ARC.clip_id, tmp_path, ImportOptions(camera_rate_hz=10, write_tf=False)).path
    feature = "camera_front_wide_120fov"
    ts = ARC.frame_us[feature]
    grid = np.arange(0, ts[-1] + 1, 100_000)
    want = sorted({int(np.nonzero(ts <= g)[0][-1]) for g in grid})
    msgs = _messages(bag, "/camera/front_wide_120fov/image_raw/compressed")
    assert [_stamp_ns(m.header) for _, m in msgs] == [PAI_TIME_ORIGIN_NS + int(ts[i]) * 1000 for i in want]
    assert [frame_index_of(decode_image(raw).rgb) for raw, _ in msgs[:20]] == [i % 256 for i in want[:20]]
    assert "/tf" not in BagSource(bag).info.topics and "/tf_static" not in BagSource(bag).info.topics
    assert bag_custom_data(bag)["alpamayo_ros.camera_rate_hz"] == "10"


def test_calibration_goes_to_camera_info_and_tf_static(arc_bag: Path) -> None:
    feature = "camera_front_wide_120fov"
    images = _messages(arc_bag, "/camera/front_wide_120fov/image_raw/compressed")
    infos = _messages(arc_bag, "/camera/front_wide_120fov/camera_info")
    assert [_stamp_ns(m.header) for _, m in infos] == [_stamp_ns(m.header) for _, m in images]
    info = infos[0][1]
    row = ftheta_row(feature, ARC.width, ARC.height)
    f = row["fw_poly_1"]  # this lens has odd terms only: equidistant represents it exactly
    assert info.distortion_model == "equidistant" and (info.width, info.height) == (ARC.width, ARC.height)
    np.testing.assert_allclose(info.k, [f, 0, row["cx"], 0, f, row["cy"], 0, 0, 1], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(info.d, [row["fw_poly_3"] / f, 0, 0, 0], atol=1e-9)
    np.testing.assert_allclose(info.p, [f, 0, row["cx"], 0, 0, f, row["cy"], 0, 0, 0, 1, 0], rtol=1e-9, atol=1e-9)
    static = _messages(arc_bag, "/tf_static")
    assert len(static) == 1 and static[0][0].log_time_ns == BagSource(arc_bag).info.start_ns
    by_child = {t.child_frame_id: t for t in static[0][1].transforms}
    assert set(by_child) == set(MODEL_CAMERA_FEATURES.values())
    for cam, tr in by_child.items():
        t, q = camera_pose(cam)
        assert tr.header.frame_id == "base_link"
        np.testing.assert_allclose([tr.transform.translation.x, tr.transform.translation.y, tr.transform.translation.z], t)
        r = tr.transform.rotation
        np.testing.assert_allclose(np.abs(np.dot([r.x, r.y, r.z, r.w], q)), 1.0, atol=1e-12)
    # The metadata keep the clip's identity, its time origin and the exact f-theta coefficients.
    meta = bag_custom_data(arc_bag)
    assert meta["alpamayo_ros.clip_id"] == ARC.clip_id and meta["alpamayo_ros.chunk"] == "0"
    assert clip_time_origin_s(arc_bag) == PAI_TIME_ORIGIN_NS / 1e9
    intr = json.loads(meta["alpamayo_ros.camera_intrinsics"])
    left = intr["camera_cross_left_120fov"]
    assert left["fw_poly"] == [ftheta_row("camera_cross_left_120fov", 64, 36)[f"fw_poly_{i}"] for i in range(5)]
    assert 0 < left["equidistant_fit"]["max_error_px"] < 0.05  # even terms: approximated, and said how well


def test_equidistant_fit_of_f_theta() -> None:
    from alpamayo_ros.tools.pai.dataset import FThetaIntrinsics

    def intr(fw: list[float]) -> FThetaIntrinsics:
        theta = np.linspace(0, 1.5, 300)
        bw = np.polynomial.polynomial.polyfit(np.polynomial.polynomial.polyval(theta, fw), theta, 4)
        return FThetaIntrinsics(1920, 1080, 959.5, 539.5, tuple(fw), tuple(bw))

    exact = fit_equidistant(intr([0.0, 1000.0, 0.0, -25.0, 0.0]))
    assert exact.focal_px == pytest.approx(1000.0) and exact.k[0] == pytest.approx(-0.025) and exact.max_error_px < 1e-6
    approx = fit_equidistant(intr([0.0, 1000.0, 12.0, -40.0, 3.0]))
    theta = np.linspace(0, approx.theta_max_rad, 50)
    r = np.polynomial.polynomial.polyval(theta, [0.0, 1000.0, 12.0, -40.0, 3.0])
    assert 0 < approx.max_error_px < 2.0
    assert np.max(np.abs(approx.radius(theta) - r)) <= approx.max_error_px + 1e-9
    assert 1.0 < approx.theta_max_rad < 1.3  # the image corner of a 1920x1080, f=1000 px lens


def test_bag_info_accepts_the_bag(arc_bag: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bag-info", str(arc_bag)]) == 0
    out = capsys.readouterr().out
    assert "usable for replay" in out and f"clip {ARC.clip_id}" in out and "clip time 0 = bag time" in out


def test_clear_errors_before_anything_is_written(dataset: Path, tmp_path: Path) -> None:
    ds = PaiDataset(dataset)
    with pytest.raises(ClipImportError, match=r"too short: .* overlap for 5\.9\d s .* needs >= 8\.0 s"):
        import_clip(ds, SHORT.clip_id, tmp_path)
    with pytest.raises(ClipImportError, match=r"has 256 frames but its timestamps table has 258 rows"):
        import_clip(ds, MISMATCH.clip_id, tmp_path)
    with pytest.raises(PaiFormatError, match=r"egomotion.parquet: missing column\(s\) \['vx'\]"):
        import_clip(ds, NO_VX.clip_id, tmp_path)
    with pytest.raises(PaiFormatError, match="clip nope is not in .*clip_index.parquet"):
        import_clip(ds, "nope", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no bag, no scratch directory left behind
    with pytest.raises(PaiFormatError, match="features.csv is missing"):
        PaiDataset(tmp_path)


def test_missing_downloads_name_the_file_and_the_fix(dataset: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(dataset, partial)
    (partial / "camera" / "camera_front_tele_30fov" / "camera_front_tele_30fov.chunk_0000.zip").unlink()
    with pytest.raises(PaiFormatError, match=r"camera_front_tele_30fov of chunk 0 is not downloaded: .*"
                                             r"chunk_0000.zip is missing; download it .*--chunk-ids 0"):
        import_clip(PaiDataset(partial), STRAIGHT.clip_id, tmp_path / "out")
    shutil.copy(dataset / "camera" / "camera_front_tele_30fov" / "camera_front_tele_30fov.chunk_0000.zip",
                partial / "camera" / "camera_front_tele_30fov")
    shutil.rmtree(partial / "calibration" / "camera_intrinsics")
    with pytest.raises(PaiFormatError, match="camera_intrinsics of chunk 0 is not downloaded"):
        import_clip(PaiDataset(partial), STRAIGHT.clip_id, tmp_path / "out")
    bag = import_clip(PaiDataset(partial), STRAIGHT.clip_id, tmp_path / "out", ImportOptions(calibration=False))
    topics = BagSource(bag.path).info.topics
    assert "/odom" in topics and not any("camera_info" in t for t in topics) and "/tf_static" not in topics
    # A zip that lacks the clip's member says so.
    with zipfile.ZipFile(partial / "labels" / "egomotion" / "egomotion.chunk_0000.zip", "w") as zf:
        zf.writestr("other.egomotion.parquet", b"")
    with pytest.raises(PaiFormatError, match=f"has no member {STRAIGHT.clip_id}.egomotion.parquet"):
        import_clip(PaiDataset(partial), STRAIGHT.clip_id, tmp_path / "out", ImportOptions(overwrite=True))


def test_timestamps_must_be_strictly_increasing_integers() -> None:
    import pyarrow as pa

    from alpamayo_ros.tools.pai.dataset import timestamps_us

    with pytest.raises(PaiFormatError, match=r"not strictly increasing at row 2 \(20 then 20 µs\)"):
        timestamps_us(pa.table({"timestamp": [0, 20, 20]}), "x.parquet")
    with pytest.raises(PaiFormatError, match="must be integer microseconds, got double"):
        timestamps_us(pa.table({"timestamp": [0.0, 1.0]}), "x.parquet")


def test_import_pai_command_selects_converts_resumes_and_reports_failures(dataset: Path, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import pandas as pd

    out = tmp_path / "bags"
    # A clip list like alpamayo-recipes' eval parquet (a `key` column).
    listing = tmp_path / "eval.parquet"
    pd.DataFrame({"key": [STRAIGHT.clip_id, SHORT.clip_id, STRAIGHT.clip_id]}).to_parquet(listing)
    code = main(["import-pai", str(dataset), "--clips", str(listing), "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1  # the short clip failed; the other was converted
    assert "1 converted, 0 kept, 1 failed" in captured.out and f"{SHORT.clip_id}: clip" in captured.err
    assert sorted(p.name for p in out.iterdir()) == [STRAIGHT.clip_id]
    # --chunk 0: the converted clip is kept (resumable), the other one is converted.
    assert main(["import-pai", str(dataset), "--chunk", "0", "--out", str(out), "--camera-rate", "10", "--quiet"]) == 0
    assert "1 converted, 1 kept, 0 failed" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted([ARC.clip_id, STRAIGHT.clip_id])
    assert main(["import-pai", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    assert "is not a directory" in capsys.readouterr().err
