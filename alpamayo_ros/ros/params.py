"""Node parameters: declaration (descriptors, ranges), validation, and a frozen dataclass.

Validation is a pure function over a plain dict (`validate`), so it is unit-tested without ROS;
`declare_parameters` / `read_parameters` are the thin rclpy side. Every error names the parameter
and says how to fix it, because a failed configure is the user's first contact with the node.

Configure-time parameters are deliberately *not* `read_only`: a configure that failed on, say, a
missing model directory can then be fixed with `ros2 param set` and retried without a restart.
The node instead refuses changes while it is configured (see `PlannerNode._on_set_parameters`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rclpy.node import Node

__all__ = [
    "BACKENDS",
    "DEFAULT_CAMERAS",
    "AskParams",
    "CameraParams",
    "FallbackParams",
    "NodeParams",
    "ParameterError",
    "PlausibilityParams",
    "RouteParams",
    "clear_declare_error",
    "declare_error",
    "declare_errors",
    "declare_camera_parameters",
    "declare_parameters",
    "read_parameters",
    "validate",
]

BACKENDS = ("kinematic", "onnxruntime", "torch", "tensorrt")
TRANSPORTS = ("raw", "compressed")
RELIABILITIES = ("reliable", "best_effort")
FRAME_MODES = ("ego", "odometry")
REASONING_MODES = ("per_candidate", "shared")
SEED_POLICIES = ("per_tick", "fixed")
FALLBACK_POLICIES = ("none", "stop", "last_valid")
IMAGE_RESIZE = ("exact", "fast")
NORMALIZATION_CONSTANTS = ("auto", "config_bf16", "config")  # core.planner.NORMALIZATION_CHOICES
MODEL_CAMERA_IDS = range(0, 7)  # spec §1.1: cross_left=0 … front_tele=6

# The Alpamayo-R1 rig (spec §1.1): name -> model camera id. Names are free-form; these get defaults.
DEFAULT_CAMERAS: dict[str, int] = {
    "cross_left_120fov": 0,
    "front_wide_120fov": 1,
    "cross_right_120fov": 2,
    "front_tele_30fov": 6,
}
# Every camera of the PhysicalAI-AV rig (Alpamayo 1.5 takes subsets): a key with one of these names
# gets its model camera id by default.
KNOWN_CAMERAS: dict[str, int] = {**DEFAULT_CAMERAS, "rear_left_70fov": 3, "rear_tele_30fov": 4, "rear_right_70fov": 5}


class ParameterError(ValueError):
    """A parameter value the node cannot run with; `name` is the full parameter name."""

    def __init__(self, name: str, problem: str, fix: str) -> None:
        super().__init__(f"parameter '{name}': {problem}. Fix: {fix}")
        self.name = name
        self.problem = problem
        self.fix = fix


@dataclass(frozen=True)
class CameraParams:
    name: str
    model_camera_id: int
    topic: str
    transport: str  # raw | compressed
    crop: tuple[int, int, int, int] | None  # x, y, width, height in source pixels; None = full image
    reliability: str
    depth: int


@dataclass(frozen=True)
class FallbackParams:
    policy: str = "last_valid"  # none | stop | last_valid (falls back to stop when too old)
    inference_timeout_s: float = 2.0  # wall time one tick may take before a fallback is published
    input_timeout_s: float = 1.0  # node-clock time without a plan before a fallback is published
    max_last_valid_age_s: float = 2.0  # last_valid older than this -> stop path
    stop_decel_mps2: float = 3.0  # deceleration of the stop path


@dataclass(frozen=True)
class PlausibilityParams:
    """Absolute limits for a car (core.gates.PlausibilityLimits, core.egomotion.ContinuityConfig)."""

    max_speed_mps: float = 70.0  # |v0|, every planned speed and the odometry's speed
    max_lateral_accel_mps2: float = 8.0  # v²·|curvature| of a plan
    max_pose_jump_m: float = 1.0  # odometry position off the motion by more: a jump
    max_heading_jump_rad: float = 0.3  # odometry heading step beyond the yaw rate allows: a jump


@dataclass(frozen=True)
class RouteParams:
    """The navigation instruction input (Alpamayo 1.5)."""

    topic: str = "~/route_instruction"  # std_msgs/String, transient local
    max_age_s: float = 10.0  # an instruction older than this (node clock) is dropped
    max_chars: int = 200


@dataclass(frozen=True)
class AskParams:
    """The ~/ask question service (Alpamayo 1.5)."""

    max_question_chars: int = 500
    max_answer_tokens: int = 128
    timeout_s: float = 30.0  # waiting behind the tick in progress included


@dataclass(frozen=True)
class NodeParams:
    backend: str
    model_dir: str
    engine_dir: str
    backend_threads: int
    auto_export: bool
    cameras: tuple[CameraParams, ...]
    odometry_topic: str
    odometry_reliability: str
    odometry_depth: int
    frame_mode: str
    ego_frame_id: str
    odometry_frame_id: str
    rate_hz: float
    num_candidates: int
    num_diffusion_steps: int
    reasoning_mode: str
    max_generation_length: int
    temperature: float
    top_p: float
    seed: int
    seed_policy: str
    frame_tolerance_s: float
    max_camera_skew_s: float
    max_pose_age_s: float
    time_jump_threshold_s: float
    gates_enabled: bool
    fallback: FallbackParams = field(default_factory=FallbackParams)
    plausibility: PlausibilityParams = field(default_factory=PlausibilityParams)
    max_image_bytes: int = 64 * 1024 * 1024
    max_camera_lag_s: float = 0.25
    warmup: bool = True
    publish_markers: bool = True
    image_workers: int = 2
    image_resize: str = "exact"
    diagnostics_period_s: float = 1.0
    latency_window: int = 200
    frame_lookahead_s: float = 0.002
    normalization_constants: str = "auto"
    nav_guidance_weight: float = 0.0
    noise_temperature: float = 1.0
    route: RouteParams = field(default_factory=RouteParams)
    ask: AskParams = field(default_factory=AskParams)

    @property
    def camera_ids(self) -> tuple[int, ...]:
        """Model camera ids in model order (sorted by id, spec §1.1)."""
        return tuple(sorted(c.model_camera_id for c in self.cameras))


# --- declaration --------------------------------------------------------------------------------

# name -> (default, description, range (lo, hi) or None, allowed choices or None)
_SPECS: dict[str, tuple[Any, str, tuple[float, float] | None, tuple[str, ...] | None]] = {
    "autostart": (False, "main(): configure and activate on start (machines without launch_ros)", None, None),
    "backend": ("onnxruntime", "inference backend", None, BACKENDS),
    "model_dir": ("", "model directory (config.json, tokenizer, weights or onnx/)", None, None),
    "engine_dir": ("", "tensorrt: engine directory; onnxruntime: ONNX graph directory; empty = backend default",
                   None, None),
    "backend_threads": (0, "CPU threads of the torch/onnxruntime backend; 0 = backend default", (0, 256), None),
    "auto_export": (False, "onnxruntime: export the ONNX graphs once into ~/.cache when model_dir has none "
                    "(needs torch)", None, None),
    "camera_names": (list(DEFAULT_CAMERAS), "camera keys; each has cameras.<name>.* parameters", None, None),
    "odometry.topic": ("/odom", "nav_msgs/Odometry input (REP-105 odom frame)", None, None),
    "odometry.reliability": ("reliable", "odometry QoS reliability", None, RELIABILITIES),
    "odometry.depth": (50, "odometry QoS history depth", (1, 1000), None),
    "frame_mode": ("ego", "output frame: ego (ego_frame_id at t0) or odometry", None, FRAME_MODES),
    "ego_frame_id": ("base_link", "frame_id of ego-frame outputs", None, None),
    "odometry_frame_id": ("", "frame_id of odometry-frame outputs; empty = odometry header", None, None),
    "rate_hz": (10.0, "planning timer rate on the node clock", (0.1, 50.0), None),
    "num_candidates": (6, "K trajectory candidates per tick", (1, 64), None),
    "num_diffusion_steps": (10, "flow-matching Euler steps", (1, 100), None),
    "reasoning_mode": ("per_candidate", "per_candidate (reference) or shared reasoning", None, REASONING_MODES),
    "max_generation_length": (256, "reasoning token budget", (1, 4096), None),
    "temperature": (0.6, "reasoning sampling temperature (0 = greedy)", (0.0, 2.0), None),
    "top_p": (0.98, "reasoning nucleus sampling top-p", (0.0, 1.0), None),
    "seed": (0, "base seed of reasoning and diffusion noise", (0, 2**31 - 1), None),
    "seed_policy": ("per_tick", "per_tick (seed + tick stamp) or fixed", None, SEED_POLICIES),
    "frame_tolerance_s": (0.05, "how much older than its slot time a frame may be", (0.001, 0.5), None),
    "max_camera_skew_s": (0.1, "max spread of one slot's frames across cameras", (0.001, 1.0), None),
    "frame_lookahead_s": (0.002, "a frame this far after its slot time counts as at it (stamp jitter); "
                          "0 = the reference's latest-at-or-before rule exactly", (0.0, 0.02), None),
    "normalization_constants": ("auto", "action de-normalisation: auto = the checkpoint's action_space buffers "
                                "(or recorded at export), else config.json bf16-rounded; config_bf16; config",
                                None, NORMALIZATION_CONSTANTS),
    "nav_guidance_weight": (0.0, "Alpamayo 1.5 navigation guidance: the expert blends (1 - w)·v_unguided + w·v_route "
                            "(one more prefill and twice the expert batch); 0 = off; NVIDIA's demo uses 1.5",
                            (0.0, 10.0), None),
    "noise_temperature": (1.0, "scale of the flow-matching initial noise (Alpamayo 1.5's temperature; 1 = the R1 "
                          "reference, NVIDIA's 1.5 navigation demo uses 0.6)", (0.05, 2.0), None),
    "route.topic": ("~/route_instruction", "std_msgs/String navigation instruction (Alpamayo 1.5), transient local, "
                    "e.g. 'Turn left in 40m'; '' clears it", None, None),
    "route.max_age_s": (10.0, "a route instruction older than this (node clock) is dropped", (0.1, 3600.0), None),
    "route.max_chars": (200, "longer route instructions are refused", (8, 1000), None),
    "ask.max_question_chars": (500, "longer questions to ~/ask are refused", (8, 4000), None),
    "ask.max_answer_tokens": (128, "~/ask answers stop after this many tokens", (1, 4096), None),
    "ask.timeout_s": (30.0, "~/ask gives up after this long (waiting for the tick in progress included)",
                      (0.1, 600.0), None),
    "max_pose_age_s": (0.1, "how far odometry may lag the cameras' t0", (0.001, 2.0), None),
    "time_jump_threshold_s": (1.0, "a camera stamp this far backwards resets the buffers", (0.01, 3600.0), None),
    "gates_enabled": (True, "input and output gates of the core", None, None),
    "fallback.policy": ("last_valid", "on rejection/timeout: none, stop, last_valid", None, FALLBACK_POLICIES),
    "fallback.inference_timeout_s": (2.0, "wall time one tick may take", (0.01, 600.0), None),
    "fallback.input_timeout_s": (1.0, "node-clock time without a plan", (0.01, 600.0), None),
    "fallback.max_last_valid_age_s": (2.0, "last_valid older than this -> stop path", (0.0, 60.0), None),
    "fallback.stop_decel_mps2": (3.0, "deceleration of the stop path", (0.1, 10.0), None),
    "plausibility.max_speed_mps": (70.0, "top speed of the car: a larger v0, planned speed or odometry speed is "
                                   "implausible", (1.0, 150.0), None),
    "plausibility.max_lateral_accel_mps2": (8.0, "a plan turning harder (v² x curvature) is implausible",
                                            (0.5, 50.0), None),
    "plausibility.max_pose_jump_m": (1.0, "odometry landing this far off its own motion is a jump (relocalisation "
                                     "when it stays, an outlier when it comes back)", (0.05, 1000.0), None),
    "plausibility.max_heading_jump_rad": (0.3, "odometry heading step beyond the yaw rate by more than this is a jump",
                                          (0.01, 3.2), None),
    "max_image_bytes": (64 * 1024 * 1024, "larger images (payload or decoded RGB) are rejected before any decode",
                        (100_000, 2**31 - 1), None),
    "max_camera_lag_s": (0.25, "a camera whose newest frame trails the newest odometry by more is named in "
                         "/diagnostics (plans wait for it)", (0.01, 10.0), None),
    "warmup": (True, "run one synthetic tick at configure", None, None),
    "publish_markers": (True, "publish ~/markers", None, None),
    "image_workers": (2, "threads decoding and preprocessing images", (1, 8), None),
    "image_resize": ("exact", "exact: the reference bicubic resize in the core; fast: JPEG DCT-domain reduction "
                     "+ OpenCV area resize in the node (differs by a few grey levels)", None, IMAGE_RESIZE),
    "diagnostics_period_s": (1.0, "period of /diagnostics", (0.05, 60.0), None),
    "latency_window": (200, "ticks in the latency percentile window", (10, 100000), None),
}

_CAMERA_SPECS: dict[str, tuple[Any, str, tuple[float, float] | None, tuple[str, ...] | None]] = {
    "model_camera_id": (-1, "Alpamayo camera index (0 cross_left, 1 front_wide, 2 cross_right, 3 rear_left, "
                        "4 rear_tele, 5 rear_right, 6 front_tele)", (-1, 6), None),
    "topic": ("", "image topic", None, None),
    "transport": ("compressed", "raw (sensor_msgs/Image) or compressed (CompressedImage)", None, TRANSPORTS),
    "crop": ([0, 0, 0, 0], "x, y, width, height crop before resize; width 0 = none", None, None),
    "reliability": ("reliable", "QoS reliability (large images need reliable)", None, RELIABILITIES),
    "depth": (5, "QoS history depth (a tick needs 4 frames per camera; a burst must not overwrite them)",
              (1, 100), None),
}


def _descriptor(name: str, default: Any, description: str, rng: tuple[float, float] | None,
                choices: tuple[str, ...] | None) -> Any:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    if choices:
        description = f"{description} ({' | '.join(choices)})"
    desc = ParameterDescriptor(name=name, description=description)
    if rng is not None and isinstance(default, int) and not isinstance(default, bool):
        desc.integer_range = [IntegerRange(from_value=int(rng[0]), to_value=int(rng[1]), step=1)]
    elif rng is not None and isinstance(default, float):
        desc.floating_point_range = [FloatingPointRange(from_value=float(rng[0]), to_value=float(rng[1]))]
    return desc


def _declare(node: Node, name: str, spec: tuple[Any, str, Any, Any], default: Any | None = None) -> None:
    if node.has_parameter(name):
        return
    value, description, rng, choices = spec
    value = value if default is None else default
    desc = _descriptor(name, value, description, rng, choices)
    try:
        node.declare_parameter(name, value, desc)
    except Exception as exc:  # an out-of-range or mistyped value from the params file / -p overrides
        # Keep the node constructible (a traceback at startup names nothing a user can act on):
        # declare the default and let configure fail with the parameter's name and the fix.
        node.declare_parameter(name, value, desc, ignore_override=True)
        _declare_errors(node)[name] = (type(exc).__name__, str(exc))


def _declare_errors(node: Node) -> dict[str, tuple[str, str]]:
    errors = getattr(node, "_alpamayo_declare_errors", None)
    if errors is None:
        errors = {}
        setattr(node, "_alpamayo_declare_errors", errors)  # noqa: B010 - a plain attribute on the node
    return errors


def clear_declare_error(node: Node, name: str) -> None:
    _declare_errors(node).pop(name, None)


_TYPE_NAMES = {bool: "a boolean (true or false)", int: "an integer", float: "a floating-point number",
               str: "a string", list: "a list"}


def _spec_of(name: str) -> tuple[Any, str, Any, Any] | None:
    return _SPECS.get(name) or (_CAMERA_SPECS.get(name.rsplit(".", 1)[-1]) if name.startswith("cameras.") else None)


def declare_error(node: Node, name: str) -> ParameterError | None:
    """Why the startup value (params file, -p) of `name` was refused, as the error configure raises."""
    error = _declare_errors(node).get(name)
    if error is None:
        return None
    kind, message = error
    spec = _spec_of(name)
    default, rng = (spec[0], spec[2]) if spec else (None, None)
    if kind == "InvalidParameterTypeException" and spec is not None:
        wanted = _TYPE_NAMES.get(type(default), type(default).__name__)
        example = f"{default:.1f}" if isinstance(default, float) else str(default).lower() if isinstance(
            default, bool) else repr(default) if isinstance(default, str) else str(default)
        within = f" in [{rng[0]}, {rng[1]}]" if rng else ""
        return ParameterError(name, f"wrong type: the startup value is not {wanted} ({message})",
                              f"give {wanted}{within}, e.g. -p {name}:={example}")
    fix = f"set a value in [{rng[0]}, {rng[1]}]" if rng else "set a value the parameter accepts"
    return ParameterError(name, f"the value given at startup was refused ({message})", fix)


def declare_errors(node: Node) -> list[ParameterError]:
    """Every startup value refused so far (the node logs them at construction)."""
    return [err for name in list(_declare_errors(node)) if (err := declare_error(node, name)) is not None]


def _raise_declare_errors(node: Node) -> None:
    for err in declare_errors(node):
        raise err


def declare_parameters(node: Node) -> None:
    """Declare the fixed parameters (values come from --params-file overrides when given)."""
    for name, spec in _SPECS.items():
        _declare(node, name, spec)


def declare_camera_parameters(node: Node, names: list[str]) -> None:
    """Declare cameras.<name>.* for every camera key (idempotent; called at each configure)."""
    for cam in names:
        for key, spec in _CAMERA_SPECS.items():
            default: Any = None
            if key == "model_camera_id" and cam in KNOWN_CAMERAS:
                default = KNOWN_CAMERAS[cam]
            elif key == "topic":
                default = f"/camera/{cam}/image_raw/compressed"
            _declare(node, f"cameras.{cam}.{key}", spec, default)


def read_parameters(node: Node) -> NodeParams:
    """Declare the per-camera parameters, read everything and validate (raises ParameterError)."""
    _raise_declare_errors(node)
    names = list(node.get_parameter("camera_names").value or [])
    bad = [n for n in names if not n or not all(ch.isalnum() or ch == "_" for ch in n)]
    if bad:
        raise ParameterError("camera_names", f"invalid camera key(s) {bad}",
                             "use letters, digits and '_' only, e.g. [cross_left, front_wide, cross_right, front_tele]")
    declare_camera_parameters(node, names)
    _raise_declare_errors(node)
    raw = {name: node.get_parameter(name).value for name in _SPECS}
    for cam in names:
        for key in _CAMERA_SPECS:
            raw[f"cameras.{cam}.{key}"] = node.get_parameter(f"cameras.{cam}.{key}").value
    params = validate(raw)
    _check_topic_names(node, params)
    return params


def _check_topic_names(node: Node, params: NodeParams) -> None:
    """Topic names by rclpy's rules, expanded against the node's name and namespace (as the
    subscriptions will be): a bad one fails configure here instead of activate."""
    named = [(f"cameras.{c.name}.topic", c.topic) for c in params.cameras] + [("odometry.topic", params.odometry_topic),
                                                                              ("route.topic", params.route.topic)]
    for name, topic in named:
        try:
            node.resolve_topic_name(topic)
        except Exception as exc:  # rclpy raises RCLError (no public class) for every name rule
            reason = str(exc).split(", at ")[0].removeprefix("failed to resolve name: ")
            raise ParameterError(name, f"'{topic}' is not a valid ROS topic name ({reason})",
                                 "use letters, digits, '_' and '/' separators (a token must not start with a "
                                 "digit), e.g. /camera/front_wide/image_raw/compressed") from exc


# --- validation (pure) ----------------------------------------------------------------------------


def _choice(raw: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = str(raw[name])
    if value not in choices:
        raise ParameterError(name, f"'{value}' is not allowed", f"set it to one of {', '.join(choices)}")
    return value


def _number(raw: dict[str, Any], name: str, lo: float, hi: float, *, open_lo: bool = False) -> float:
    value = raw[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(name, f"{value!r} is not a finite number", f"set a number in [{lo}, {hi}]")
    if value > hi or value < lo or (open_lo and value <= lo):
        interval = f"({lo}, {hi}]" if open_lo else f"[{lo}, {hi}]"
        raise ParameterError(name, f"{value} is out of range {interval}", f"set a value in {interval}")
    return value


def _ranged(raw: dict[str, Any], name: str) -> float:
    """A number checked against the range its descriptor declares (one place for the bounds)."""
    rng = _SPECS[name][2]
    assert rng is not None
    return _number(raw, name, rng[0], rng[1])


def _camera(raw: dict[str, Any], cam: str) -> CameraParams:
    prefix = f"cameras.{cam}."
    cam_id = int(raw[prefix + "model_camera_id"])
    if cam_id not in MODEL_CAMERA_IDS:
        raise ParameterError(prefix + "model_camera_id", f"{cam_id} is not an Alpamayo camera index",
                             "set 0 (cross_left), 1 (front_wide), 2 (cross_right), 3-5 (rear) or 6 (front_tele)")
    topic = str(raw[prefix + "topic"]).strip()
    if not topic:
        raise ParameterError(prefix + "topic", "is empty", "set the image topic of this camera")
    crop_vals = [int(v) for v in (raw[prefix + "crop"] or [])]
    crop: tuple[int, int, int, int] | None = None
    if crop_vals and any(crop_vals):
        if len(crop_vals) != 4 or min(crop_vals) < 0 or crop_vals[2] == 0 or crop_vals[3] == 0:
            raise ParameterError(prefix + "crop", f"{crop_vals} is not [x, y, width, height]",
                                 "give 4 non-negative integers with width, height > 0, or [0, 0, 0, 0] for none")
        crop = (crop_vals[0], crop_vals[1], crop_vals[2], crop_vals[3])
    return CameraParams(
        name=cam,
        model_camera_id=cam_id,
        topic=topic,
        transport=_choice(raw, prefix + "transport", TRANSPORTS),
        crop=crop,
        reliability=_choice(raw, prefix + "reliability", RELIABILITIES),
        depth=int(_number(raw, prefix + "depth", 1, 100)),
    )


def _cameras(raw: dict[str, Any]) -> tuple[CameraParams, ...]:
    names = list(raw["camera_names"] or [])
    if not names:
        raise ParameterError("camera_names", "is empty", "list the camera keys, e.g. [cross_left, front_wide, ...]")
    if len(set(names)) != len(names):
        raise ParameterError("camera_names", f"{names} has duplicates", "list each camera once")
    cams = tuple(_camera(raw, n) for n in names)
    seen: dict[int, str] = {}
    for c in cams:
        if c.model_camera_id in seen:
            raise ParameterError(f"cameras.{c.name}.model_camera_id",
                                 f"camera id {c.model_camera_id} is also used by '{seen[c.model_camera_id]}'",
                                 "give each camera a distinct model camera id")
        seen[c.model_camera_id] = c.name
    topics: dict[str, str] = {}
    for c in cams:
        if c.topic in topics:
            raise ParameterError(f"cameras.{c.name}.topic", f"'{c.topic}' is used by two cameras "
                                 f"('{topics[c.topic]}' too)", "give each camera its own topic")
        topics[c.topic] = c.name
    return cams


def _model_dir(raw: dict[str, Any], backend: str) -> str:
    model_dir = str(raw["model_dir"]).strip()
    if not model_dir:
        raise ParameterError("model_dir", "is empty",
                             "set model_dir to a model directory (config.json + tokenizer), "
                             "e.g. one made by `alpamayo-ros make-tiny-model`")
    path = os.path.expanduser(model_dir)
    if not os.path.isdir(path):
        raise ParameterError("model_dir", f"'{model_dir}' does not exist or is not a directory",
                             "point model_dir at an existing model directory (it is read at configure)")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ParameterError("model_dir", f"'{model_dir}' has no config.json",
                             "point model_dir at a model directory, not at its parent or a weights file")
    engine_dir = str(raw["engine_dir"]).strip()
    if engine_dir and backend in ("tensorrt", "onnxruntime") and not os.path.isdir(os.path.expanduser(engine_dir)):
        raise ParameterError("engine_dir", f"'{engine_dir}' does not exist",
                             "build engines with `alpamayo-ros build-engines` (tensorrt), export the ONNX graphs "
                             "(onnxruntime), or leave engine_dir empty for the backend's default")
    return path


def validate(raw: dict[str, Any]) -> NodeParams:
    """Turn raw parameter values into NodeParams; raises ParameterError naming the parameter."""
    backend = _choice(raw, "backend", BACKENDS)
    fallback = FallbackParams(
        policy=_choice(raw, "fallback.policy", FALLBACK_POLICIES),
        inference_timeout_s=_number(raw, "fallback.inference_timeout_s", 0.01, 600.0),
        input_timeout_s=_number(raw, "fallback.input_timeout_s", 0.01, 600.0),
        max_last_valid_age_s=_number(raw, "fallback.max_last_valid_age_s", 0.0, 60.0),
        stop_decel_mps2=_number(raw, "fallback.stop_decel_mps2", 0.1, 10.0),
    )
    odom_topic = str(raw["odometry.topic"]).strip()
    if not odom_topic:
        raise ParameterError("odometry.topic", "is empty", "set the nav_msgs/Odometry topic")
    ego_frame = str(raw["ego_frame_id"]).strip()
    if not ego_frame:
        raise ParameterError("ego_frame_id", "is empty", "set it to the vehicle frame, usually base_link")
    return NodeParams(
        backend=backend,
        model_dir=_model_dir(raw, backend),
        engine_dir=str(raw["engine_dir"]).strip(),
        backend_threads=int(_number(raw, "backend_threads", 0, 256)),
        auto_export=bool(raw["auto_export"]),
        cameras=_cameras(raw),
        odometry_topic=odom_topic,
        odometry_reliability=_choice(raw, "odometry.reliability", RELIABILITIES),
        odometry_depth=int(_number(raw, "odometry.depth", 1, 1000)),
        frame_mode=_choice(raw, "frame_mode", FRAME_MODES),
        ego_frame_id=ego_frame,
        odometry_frame_id=str(raw["odometry_frame_id"]).strip(),
        rate_hz=_number(raw, "rate_hz", 0.1, 50.0),
        num_candidates=int(_number(raw, "num_candidates", 1, 64)),
        num_diffusion_steps=int(_number(raw, "num_diffusion_steps", 1, 100)),
        reasoning_mode=_choice(raw, "reasoning_mode", REASONING_MODES),
        max_generation_length=int(_number(raw, "max_generation_length", 1, 4096)),
        temperature=_number(raw, "temperature", 0.0, 2.0),
        top_p=_number(raw, "top_p", 0.0, 1.0, open_lo=True),
        seed=int(_number(raw, "seed", 0, 2**31 - 1)),
        seed_policy=_choice(raw, "seed_policy", SEED_POLICIES),
        frame_tolerance_s=_number(raw, "frame_tolerance_s", 0.001, 0.5),
        max_camera_skew_s=_number(raw, "max_camera_skew_s", 0.001, 1.0),
        max_pose_age_s=_number(raw, "max_pose_age_s", 0.001, 2.0),
        time_jump_threshold_s=_number(raw, "time_jump_threshold_s", 0.01, 3600.0),
        gates_enabled=bool(raw["gates_enabled"]),
        fallback=fallback,
        plausibility=PlausibilityParams(
            max_speed_mps=_ranged(raw, "plausibility.max_speed_mps"),
            max_lateral_accel_mps2=_ranged(raw, "plausibility.max_lateral_accel_mps2"),
            max_pose_jump_m=_ranged(raw, "plausibility.max_pose_jump_m"),
            max_heading_jump_rad=_ranged(raw, "plausibility.max_heading_jump_rad"),
        ),
        max_image_bytes=int(_ranged(raw, "max_image_bytes")),
        max_camera_lag_s=_ranged(raw, "max_camera_lag_s"),
        warmup=bool(raw["warmup"]),
        publish_markers=bool(raw["publish_markers"]),
        image_workers=int(_number(raw, "image_workers", 1, 8)),
        image_resize=_choice(raw, "image_resize", IMAGE_RESIZE),
        diagnostics_period_s=_number(raw, "diagnostics_period_s", 0.05, 60.0),
        latency_window=int(_number(raw, "latency_window", 10, 100000)),
        frame_lookahead_s=_number(raw, "frame_lookahead_s", 0.0, 0.02),
        normalization_constants=_choice(raw, "normalization_constants", NORMALIZATION_CONSTANTS),
        nav_guidance_weight=_ranged(raw, "nav_guidance_weight"),
        noise_temperature=_ranged(raw, "noise_temperature"),
        route=_route(raw),
        ask=AskParams(max_question_chars=int(_ranged(raw, "ask.max_question_chars")),
                      max_answer_tokens=int(_ranged(raw, "ask.max_answer_tokens")),
                      timeout_s=_ranged(raw, "ask.timeout_s")),
    )


def _route(raw: dict[str, Any]) -> RouteParams:
    topic = str(raw["route.topic"]).strip()
    if not topic:
        raise ParameterError("route.topic", "is empty", "set the route instruction topic, e.g. ~/route_instruction")
    return RouteParams(topic=topic, max_age_s=_ranged(raw, "route.max_age_s"),
                       max_chars=int(_ranged(raw, "route.max_chars")))


def default_raw(model_dir: str = "") -> dict[str, Any]:
    """All defaults as a raw dict (tests, tools); camera parameters included."""
    raw: dict[str, Any] = {name: spec[0] for name, spec in _SPECS.items()}
    raw["model_dir"] = model_dir
    for cam, cam_id in DEFAULT_CAMERAS.items():
        for key, spec in _CAMERA_SPECS.items():
            raw[f"cameras.{cam}.{key}"] = spec[0]
        raw[f"cameras.{cam}.model_camera_id"] = cam_id
        raw[f"cameras.{cam}.topic"] = f"/camera/{cam}/image_raw/compressed"
    return raw


CONFIGURE_TIME = frozenset(_SPECS) - {"autostart"}


def backend_options(params: NodeParams) -> dict[str, Any]:
    """Node parameters -> runtime.create_backend options (names as the runtime documents them)."""
    options: dict[str, Any] = {"mode": "shared_reasoning" if params.reasoning_mode == "shared" else "per_candidate"}
    if params.backend in ("torch", "onnxruntime"):
        options["max_candidates"] = params.num_candidates
        if params.backend_threads:
            options["num_threads"] = params.backend_threads
    if params.backend == "onnxruntime":
        options["auto_export"] = params.auto_export
        if params.engine_dir:
            options["onnx_dir"] = params.engine_dir
    if params.backend == "tensorrt" and params.engine_dir:
        options["engine_dir"] = params.engine_dir
    return options


def planner_config(params: NodeParams) -> Any:
    """Node parameters -> core.planner.PlannerConfig (the node's configure and the offline replay)."""
    from alpamayo_ros.core.backend import SamplingRequest
    from alpamayo_ros.core.egomotion import ContinuityConfig
    from alpamayo_ros.core.gates import InputGateConfig, OutputGateConfig, PlausibilityLimits
    from alpamayo_ros.core.planner import PlannerConfig

    sampling = SamplingRequest(
        num_candidates=params.num_candidates,
        num_diffusion_steps=params.num_diffusion_steps,
        shared_reasoning=params.reasoning_mode == "shared",
        seed=params.seed,
        temperature=params.temperature,
        top_p=params.top_p,
        max_generation_length=params.max_generation_length,
        noise_temperature=params.noise_temperature,
        nav_guidance_weight=params.nav_guidance_weight,
    )
    pl = params.plausibility
    limits = PlausibilityLimits(max_speed_mps=pl.max_speed_mps, max_lateral_accel_mps2=pl.max_lateral_accel_mps2)
    continuity = ContinuityConfig(max_jump_m=pl.max_pose_jump_m, max_heading_jump_rad=pl.max_heading_jump_rad)
    return PlannerConfig(
        camera_ids=params.camera_ids,
        sampling=sampling,
        seed_policy=params.seed_policy,
        frame_tolerance_s=params.frame_tolerance_s,
        max_camera_skew_s=params.max_camera_skew_s,
        max_pose_age_s=params.max_pose_age_s,
        gates_enabled=params.gates_enabled,
        frame_lookahead_s=params.frame_lookahead_s,
        normalization_constants=params.normalization_constants,
        input_gate=InputGateConfig(continuity=continuity, limits=limits),
        output_gate=OutputGateConfig(limits=limits),
    )
