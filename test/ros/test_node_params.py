"""Parameter validation (pure) and declaration with descriptors (rclpy, no DDS traffic needed)."""

from __future__ import annotations

import pytest

from alpamayo_ros.ros.params import ParameterError, default_raw, validate


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    return str(tmp_path)


def test_defaults_validate_to_the_r1_rig(model_dir) -> None:
    p = validate(default_raw(model_dir))
    assert p.camera_ids == (0, 1, 2, 6)
    assert [c.transport for c in p.cameras] == ["compressed"] * 4
    assert all(c.reliability == "reliable" for c in p.cameras)  # 1 MB images need RELIABLE (feasibility §2)
    assert p.num_candidates == 6 and p.rate_hz == 10.0 and p.frame_mode == "ego"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("rate_hz", 0.0, "out of range"),
        ("rate_hz", float("nan"), "finite"),
        ("num_candidates", 0, "out of range"),
        ("top_p", 0.0, "(0.0, 1.0]"),
        ("temperature", -0.1, "out of range"),
        ("backend", "tflite", "one of kinematic"),
        ("frame_mode", "map", "one of ego, odometry"),
        ("fallback.policy", "brake", "none, stop, last_valid"),
        ("cameras.front_wide_120fov.model_camera_id", 9, "not an Alpamayo camera index"),
        ("cameras.front_wide_120fov.model_camera_id", 0, "also used by"),
        ("cameras.front_wide_120fov.topic", "", "is empty"),
        ("cameras.front_wide_120fov.topic", "/camera/cross_left_120fov/image_raw/compressed", "used by two"),
        ("cameras.front_wide_120fov.crop", [0, 0, 100], "[x, y, width, height]"),
        ("cameras.front_wide_120fov.transport", "theora", "raw, compressed"),
        ("camera_names", [], "is empty"),
        ("odometry.topic", " ", "is empty"),
        ("frame_lookahead_s", 0.05, "out of range"),
        ("normalization_constants", "weights", "one of auto, config_bf16, config"),
    ],
)
def test_each_bad_value_names_the_parameter_and_the_fix(model_dir, name, value, fragment) -> None:
    raw = default_raw(model_dir)
    raw[name] = value
    with pytest.raises(ParameterError) as err:
        validate(raw)
    assert err.value.name == name
    assert fragment in str(err.value)
    assert "Fix:" in str(err.value)


def test_missing_or_wrong_model_dir_is_refused(tmp_path) -> None:
    for bad, fragment in ((str(tmp_path / "nope"), "does not exist"), (str(tmp_path), "no config.json"),
                          ("", "is empty")):
        with pytest.raises(ParameterError) as err:
            validate(default_raw(bad))
        assert err.value.name == "model_dir" and fragment in str(err.value)


def test_frame_lookahead_and_normalization_reach_the_planner_config(model_dir) -> None:
    from alpamayo_ros.ros.params import planner_config

    default = planner_config(validate(default_raw(model_dir)))
    assert (default.frame_lookahead_s, default.normalization_constants) == (0.002, "auto")
    raw = default_raw(model_dir)
    raw.update({"frame_lookahead_s": 0.0, "normalization_constants": "config"})
    cfg = planner_config(validate(raw))
    assert (cfg.frame_lookahead_s, cfg.normalization_constants) == (0.0, "config")


def test_crop_is_parsed(model_dir) -> None:
    raw = default_raw(model_dir)
    raw["cameras.front_tele_30fov.crop"] = [10, 20, 640, 360]
    p = validate(raw)
    assert {c.name: c.crop for c in p.cameras}["front_tele_30fov"] == (10, 20, 640, 360)
    assert {c.name: c.crop for c in p.cameras}["cross_left_120fov"] is None



@pytest.mark.ros
def test_descriptors_enforce_ranges_and_params_file_names(ros_context, unique_name, model_dir) -> None:
    from rclpy.parameter import Parameter

    from alpamayo_ros.ros.node import PlannerNode
    from alpamayo_ros.ros.params import read_parameters

    node = PlannerNode(
        node_name=f"planner_{unique_name}", context=ros_context,
        parameter_overrides=[Parameter("model_dir", value=model_dir),
                             Parameter("camera_names", value=["a", "b"]),
                             Parameter("cameras.a.model_camera_id", value=1),
                             Parameter("cameras.b.model_camera_id", value=6),
                             Parameter("cameras.b.transport", value="raw")])
    try:
        res = node.set_parameters([Parameter("num_candidates", value=99)])[0]
        assert not res.successful and "99" in res.reason
        assert node.set_parameters([Parameter("rate_hz", value=5.0)])[0].successful
        p = read_parameters(node)  # declares cameras.<name>.* from the overrides
        assert p.camera_ids == (1, 6) and p.rate_hz == 5.0
        assert [c.topic for c in p.cameras] == ["/camera/a/image_raw/compressed", "/camera/b/image_raw/compressed"]
        assert [c.transport for c in p.cameras] == ["compressed", "raw"]
        assert node.describe_parameter("cameras.b.depth").integer_range[0].to_value == 100
    finally:
        node.destroy_node()


@pytest.mark.ros
def test_config_planner_yaml_loads_and_validates(ros_context, model_dir) -> None:
    from pathlib import Path

    import yaml

    from alpamayo_ros.ros.node import PlannerNode
    from alpamayo_ros.ros.params import read_parameters

    path = Path(__file__).resolve().parents[2] / "config" / "planner.yaml"
    node = PlannerNode(context=ros_context,
                       cli_args=["--ros-args", "--params-file", str(path), "-p", f"model_dir:={model_dir}"])
    try:
        p = read_parameters(node)
        assert p.camera_ids == (0, 1, 2, 6) and p.backend == "onnxruntime"
        assert p.odometry_topic == "/odom" and p.fallback.policy == "last_valid"
    finally:
        node.destroy_node()
    # the commented 4-camera rig example is valid YAML and valid parameters
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("# camera_names: [front_left"))
    block = []
    for line in lines[start:]:
        if not line.strip().startswith("#") or line.strip() == "#":
            break
        block.append(line.replace("#", "", 1))
    example = yaml.safe_load("\n".join(b[4:] for b in block))
    raw = default_raw(model_dir)
    raw["camera_names"] = example["camera_names"]
    for cam, fields in example["cameras"].items():
        for key in ("model_camera_id", "topic", "transport", "crop", "reliability", "depth"):
            raw[f"cameras.{cam}.{key}"] = fields.get(key, default_raw()[f"cameras.front_wide_120fov.{key}"])
    assert validate(raw).camera_ids == (0, 1, 2, 6)


@pytest.mark.ros
def test_out_of_range_startup_value_fails_configure_by_name_then_can_be_fixed(ros_context, model_dir) -> None:
    from lifecycle_msgs.msg import State
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from alpamayo_ros.ros.node import PlannerNode

    node = PlannerNode(context=ros_context, parameter_overrides=[
        Parameter("rate_hz", value=500.0), Parameter("model_dir", value=model_dir)])
    try:  # constructing did not raise: the refused value is reported by configure
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        assert "parameter 'rate_hz'" in node.last_configure_error and "[0.1, 50.0]" in node.last_configure_error
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        assert node.set_parameters([Parameter("rate_hz", value=20.0)])[0].successful
        from alpamayo_ros.ros.params import read_parameters

        assert read_parameters(node).rate_hz == 20.0
    finally:
        node.destroy_node()
