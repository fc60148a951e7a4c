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
        ("plausibility.max_speed_mps", 0.0, "out of range"),
        ("plausibility.max_pose_jump_m", float("inf"), "finite"),
        ("max_image_bytes", 10, "out of range"),
        ("max_camera_lag_s", -1.0, "out of range"),
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


def test_plausibility_limits_reach_the_core_gates(model_dir) -> None:
    from alpamayo_ros.ros.params import planner_config

    raw = default_raw(model_dir)
    raw["plausibility.max_speed_mps"] = 40.0
    raw["plausibility.max_lateral_accel_mps2"] = 6.0
    raw["plausibility.max_pose_jump_m"] = 0.5
    raw["plausibility.max_heading_jump_rad"] = 0.2
    cfg = planner_config(validate(raw))
    assert cfg.input_gate.limits == cfg.output_gate.limits
    assert (cfg.output_gate.limits.max_speed_mps, cfg.output_gate.limits.max_lateral_accel_mps2) == (40.0, 6.0)
    assert (cfg.input_gate.continuity.max_jump_m, cfg.input_gate.continuity.max_heading_jump_rad) == (0.5, 0.2)
    defaults = validate(default_raw(model_dir))
    assert defaults.max_image_bytes == 64 * 1024 * 1024 and defaults.plausibility.max_speed_mps == 70.0


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


@pytest.mark.ros
@pytest.mark.parametrize(("name", "topic", "why"), [
    ("cameras.front_wide_120fov.topic", "not a topic!", "characters other than alphanumerics"),
    ("odometry.topic", "/cam 2", "characters other than alphanumerics"),
    ("cameras.cross_left_120fov.topic", "/a//b", "repeated '/'"),
    ("cameras.front_tele_30fov.topic", "/camera/6tele", "must not start with a number"),
])
def test_invalid_topic_names_fail_configure_naming_the_parameter(ros_context, model_dir, name, topic, why) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from alpamayo_ros.ros.node import PlannerNode

    node = PlannerNode(context=ros_context, parameter_overrides=[
        Parameter("model_dir", value=model_dir), Parameter(name, value=topic)])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        err = node.last_configure_error
        assert f"parameter '{name}'" in err and "not a valid ROS topic name" in err and why in err, err
        assert "Fix:" in err
    finally:
        node.destroy_node()


@pytest.mark.ros
def test_a_failing_transition_logs_its_cause(ros_context, tiny_model_dir, capfd) -> None:
    from lifecycle_msgs.msg import State
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from alpamayo_ros.ros.node import PlannerNode

    class BrokenSubscriptions(PlannerNode):
        def _input_group(self, name):  # fault injection: creating the subscriptions fails
            raise RuntimeError(f"cannot subscribe input '{name}'")

    node = BrokenSubscriptions(context=ros_context, parameter_overrides=[
        Parameter("model_dir", value=tiny_model_dir), Parameter("backend", value="kinematic"),
        Parameter("warmup", value=False)])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.ERROR
        assert "activate failed: RuntimeError: cannot subscribe input" in node.last_transition_error
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED  # resources released
        err = capfd.readouterr().err
        assert "activate failed: RuntimeError: cannot subscribe input" in err
        assert "error in state" in err and "after: activate failed" in err
    finally:
        node.destroy_node()


@pytest.mark.ros
def test_max_generation_length_beyond_the_graphs_decode_capacity_fails_configure(ros_context, tiny_model_dir) -> None:
    pytest.importorskip("torch")
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from alpamayo_ros.ros.node import PlannerNode

    # the tiny model's graphs hold 256 suffix tokens: 257 generated tokens at most
    node = PlannerNode(context=ros_context, parameter_overrides=[
        Parameter("model_dir", value=tiny_model_dir), Parameter("backend", value="torch"),
        Parameter("warmup", value=False), Parameter("num_candidates", value=2),
        Parameter("max_generation_length", value=300)])
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        err = node.last_configure_error
        assert "parameter 'max_generation_length'" in err and "decode capacity" in err and "257" in err, err
        assert "Fix: set max_generation_length <= 257" in err
        assert node.set_parameters([Parameter("max_generation_length", value=257)])[0].successful
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    finally:
        node.destroy_node()


@pytest.mark.ros
@pytest.mark.parametrize(("override", "name", "wanted"), [
    ("rate_hz:=abc", "rate_hz", "a floating-point number"),
    ("rate_hz:=20", "rate_hz", "a floating-point number"),
    ("num_candidates:=many", "num_candidates", "an integer"),
    ("warmup:=3", "warmup", "a boolean"),
])
def test_a_startup_value_of_the_wrong_type_is_named_a_type_error(ros_context, model_dir, capfd, override, name,
                                                                 wanted) -> None:
    from rclpy.lifecycle import TransitionCallbackReturn

    from alpamayo_ros.ros.node import PlannerNode

    node = PlannerNode(context=ros_context, cli_args=["--ros-args", "-p", override, "-p", f"model_dir:={model_dir}"])
    try:
        said = capfd.readouterr().err  # said at startup, not only when configure runs
        assert f"parameter '{name}': wrong type" in said, said
        assert node.trigger_configure() == TransitionCallbackReturn.FAILURE
        err = node.last_configure_error
        assert f"parameter '{name}': wrong type" in err and f"is not {wanted}" in err, err
        assert f"Fix: give {wanted}" in err and f"-p {name}:=" in err
    finally:
        node.destroy_node()
