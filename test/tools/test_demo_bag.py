"""The demo bag: a real rosbag2 (v9 metadata, MCAP) whose images move with the drive."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from alpamayo_ros.tools.bag_io import BagSource, decode_image, decode_odometry, validate_bag
from alpamayo_ros.tools.demo_bag import PHASES, DemoBagConfig, make_demo_bag, simulate_drive
from alpamayo_ros.tools.topics import DEFAULT_CAMERAS, DEFAULT_ODOM_TOPIC


def test_bag_is_rosbag2_v9_mcap_with_the_expected_topics_and_rates(short_bag) -> None:
    meta = yaml.safe_load((short_bag.path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == "mcap"
    types = {t["topic_metadata"]["name"]: t["topic_metadata"]["type"] for t in meta["topics_with_message_count"]}
    for cam in DEFAULT_CAMERAS:
        assert types[cam.topic] == "sensor_msgs/msg/CompressedImage"
    assert types[DEFAULT_ODOM_TOPIC] == "nav_msgs/msg/Odometry"
    # Every topic carries its type hash (rosbag2 v9 readers match on it).
    assert all(t["topic_metadata"]["type_description_hash"].startswith("RIHS01_") for t in meta["topics_with_message_count"])
    src = BagSource(short_bag.path)
    assert validate_bag(src, [c.topic for c in DEFAULT_CAMERAS], DEFAULT_ODOM_TOPIC).ok
    assert src.info.duration_s == pytest.approx(10.0, abs=0.01)
    assert short_bag.counts[DEFAULT_ODOM_TOPIC] == 501  # 50 Hz
    assert all(short_bag.counts[c.topic] in (100, 101) for c in DEFAULT_CAMERAS)  # 10 Hz
    assert short_bag.size_bytes < 8e6


def test_odometry_is_rep105_and_consistent_with_its_twist(short_bag) -> None:
    odo = [decode_odometry(m) for m in BagSource(short_bag.path).messages([DEFAULT_ODOM_TOPIC])]
    stamps = np.array([o.stamp_s for o in odo])
    assert np.allclose(np.diff(stamps), 0.02, atol=1e-6)
    pos = np.array([o.position for o in odo])
    speed_fd = np.linalg.norm(np.diff(pos[:, :2], axis=0), axis=1) / 0.02
    speed_tw = np.array([o.linear_velocity[0] for o in odo])
    assert np.allclose(speed_fd, 0.5 * (speed_tw[1:] + speed_tw[:-1]), atol=0.05)
    assert all(o.frame_id == "odom" for o in odo)
    assert np.allclose([np.linalg.norm(o.orientation_xyzw) for o in odo], 1.0)
    # The drive stops: speed reaches zero in the stop phase, and is back up afterwards.
    assert speed_tw.min() < 0.05 and speed_tw[-1] > 5.0


def test_drive_has_the_four_phases_and_a_lane_change_of_one_lane() -> None:
    drive = simulate_drive(DemoBagConfig(duration_s=40.0))
    assert [p[0] for p in drive.phase_bounds] == [name for name, _ in PHASES]
    assert drive.lateral[0] == 0.0 and drive.lateral[-1] == pytest.approx(3.5)
    curve = next(p for p in drive.phase_bounds if p[0] == "curve")
    in_curve = (drive.t > curve[1]) & (drive.t < curve[2])
    assert np.abs(drive.yaw_rate[in_curve]).max() > 0.1
    assert np.abs(drive.yaw_rate[drive.t < curve[1] - 0.1]).max() < 1e-6


def test_images_change_with_the_motion_and_differ_per_camera(short_bag) -> None:
    frames: dict[str, list[np.ndarray]] = {}
    topics = [c.topic for c in DEFAULT_CAMERAS]
    for msg in BagSource(short_bag.path).messages(topics):
        frames.setdefault(msg.topic, []).append(decode_image(msg).rgb)
    for topic in topics:
        imgs = frames[topic]
        assert imgs[0].shape == (320, 576, 3) and imgs[0].dtype == np.uint8
        diff = np.abs(imgs[10].astype(int) - imgs[30].astype(int)).mean()
        assert diff > 2.0, f"{topic}: frames 1 s apart look the same"
    front, left = frames[topics[1]][20], frames[topics[0]][20]
    assert np.abs(front.astype(int) - left.astype(int)).mean() > 5.0


def test_same_config_same_bag_and_raw_images(tmp_path: Path) -> None:
    cfg = DemoBagConfig(duration_s=8.0, raw_images=True, width=192, height=108)
    a = make_demo_bag(tmp_path / "a", cfg)
    b = make_demo_bag(tmp_path / "b", cfg)
    ma = list(BagSource(a.path).messages())
    mb = list(BagSource(b.path).messages())
    assert [m.data for m in ma] == [m.data for m in mb]
    img = next(m for m in ma if m.msgtype == "sensor_msgs/msg/Image")
    assert decode_image(img).rgb.shape == (108, 192, 3)
    with pytest.raises(FileExistsError):
        make_demo_bag(tmp_path / "a", cfg, overwrite=False)
    with pytest.raises(ValueError, match="duration_s"):
        DemoBagConfig(duration_s=3.0)


def test_route_instructions_follow_the_curve_in_the_trained_wording() -> None:
    from alpamayo_ros.core.navigation import is_trained_wording

    drive = simulate_drive(DemoBagConfig(duration_s=45.0))
    (_, a, b), = [p for p in drive.phase_bounds if p[0] == "curve"]
    texts = [drive.route_at(t) for t in np.arange(0.0, 45.0, 0.5)]
    assert all(is_trained_wording(t) for t in texts)
    assert drive.route_at(0.0) == "Turn left in 68m" and drive.route_at(a - 1.0) == "Turn left in 10m"  # 10 m/s
    assert drive.route_at(a + 0.1) == drive.route_at(b - 0.1) == "Turn left"  # the curve bends left (κ > 0)
    assert drive.route_at(b) == drive.route_at(44.0) == "Continue straight"
    assert float(np.interp(0.5 * (a + b), drive.t, drive.yaw_rate)) > 0.0


def test_the_bag_carries_the_route_topic(short_bag) -> None:
    from alpamayo_ros.tools.bag_io import deserialize
    from alpamayo_ros.tools.topics import DEFAULT_ROUTE_TOPIC

    msgs = list(BagSource(short_bag.path).messages([DEFAULT_ROUTE_TOPIC]))
    assert short_bag.counts[DEFAULT_ROUTE_TOPIC] == len(msgs) == 11  # 1 Hz over 10 s
    assert msgs[0].msgtype == "std_msgs/msg/String"
    assert [deserialize(m).data for m in msgs][:2] == ["Turn left in 15m", "Turn left in 5m"]
