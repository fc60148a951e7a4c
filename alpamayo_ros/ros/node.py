"""The `alpamayo_planner` lifecycle node: cameras + odometry in, K Path candidates + reasoning out.

Transitions (DESIGN.md §5):
- configure: validate every parameter, create the backend and the core Planner, run one warm-up
  tick, create the (lifecycle) publishers. Any failure returns FAILURE with a message that names
  the parameter and the fix, and leaves the node unconfigured, so configure can be retried.
- activate: subscriptions, the planning timer and the diagnostics timer.
- deactivate: stop ticking, drop subscriptions, drain the inference worker.
- cleanup / shutdown: release the backend, worker pools, buffers and publishers.

Threads: subscription callbacks only hand messages on. Camera frames arrive serialized: the callback
checks size and stamp order on the bytes and queues them for a small decode pool (deserialize,
decode, preprocess), at most one frame in decode per camera and up to 4 waiting in arrival order — a
tick needs every frame of its 0.3 s window, so a burst is queued; beyond 4 the oldest is counted as
dropped. Inference runs on one worker thread, at most one tick in flight, always for the newest
complete input. Lifecycle and parameter services live in the default callback group, timers and
subscriptions in their own groups. Every callback only hands work on, so one executor thread
(`main()`) answers services while a tick runs. Everything is timed on the node clock, so
use_sim_time works; input times come from the message headers.

Safety (docs/ros_interface.md, "Gates and fallback"): outputs never go back in t0 (`_publish`), an
odometry track that restarts (relocalisation, frame switch, time jump) drops the last plan, and the
core's gates apply the plausibility limits.

Alpamayo 1.5 (ros/navigation.py): the route instruction topic feeds every tick's prompt, and the
`~/ask` service (a coroutine, so the executor thread stays free) queues a question on the inference
worker behind the tick in progress; ticks wait while it is answered.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from alpamayo_ros.core.image_preprocess import smart_resize
from alpamayo_ros.core.navigation import PromptTextError
from alpamayo_ros.msg import TrajectoryCandidates
from alpamayo_ros.srv import Ask

from .conversions import (
    CandidateExtras,
    PathCache,
    duration_msg,
    express_in_frame,
    make_candidates_msg,
    make_markers,
    make_path,
    serialized_header_stamp,
    stamp_to_sec,
    time_msg,
)
from .diagnostics import NodeDiagnostics, Throttle, to_diagnostic_array
from .fallback import LastPlan, reexpress_plan, stop_trajectory
from .image_bridge import (
    ImageDecodeError,
    apply_crop,
    cropped_dims,
    decode_image_msg,
    decode_jpeg_reduced,
    fast_resize,
    image_dims,
    oversize_reason,
)
from .navigation import QuestionJob, RouteInput, route_qos
from .params import (
    CONFIGURE_TIME,
    CameraParams,
    NodeParams,
    ParameterError,
    backend_options,
    clear_declare_error,
    declare_errors,
    declare_parameters,
    planner_config,
    read_parameters,
)

__all__ = ["NODE_NAME", "PlannerNode"]

NODE_NAME = "alpamayo_planner"
_ODOM = "odometry"
_LOG_THROTTLE_S = 2.0
_DIAG_EVENT_MIN_PERIOD_S = 0.2
_WARMUP_T0 = 1000.0
_PENDING_FRAMES = 4  # per camera: one tick's worth of frames (4 slots at 10 Hz)
_NEW_INPUT_POLL_S = 0.005


def _msg_type(cam: CameraParams) -> type:
    return CompressedImage if cam.transport == "compressed" else Image


def _qos(reliability: str, depth: int) -> QoSProfile:
    rel = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=rel)


_OUT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.RELIABLE)


# Entities created and destroyed by lifecycle transitions get no QoS event handlers: rclpy (9.x)
# can kill a MultiThreadedExecutor's spin thread with InvalidHandle when an event handler is
# destroyed while another thread builds the wait set. The QoS mismatch the default handler would
# log is checked through the graph instead (see _check_input_graph).
def _no_sub_events() -> SubscriptionEventCallbacks:
    return SubscriptionEventCallbacks(use_default_callbacks=False)


def _no_pub_events() -> PublisherEventCallbacks:
    return PublisherEventCallbacks(use_default_callbacks=False)


def _decode_reason(message: str) -> str:
    """Machine-readable reason of an ImageDecodeError message (the core raises plain messages)."""
    text = message.lower()
    for key, code in (("unsupported image encoding", "bad_encoding"), ("unsupported compressed", "bad_format"),
                      ("corrupt", "corrupt"), ("truncated", "truncated"), ("zero size", "empty_image"),
                      ("empty", "empty_image"), ("signature", "corrupt"), ("neither jpeg", "corrupt"),
                      ("crop", "bad_crop"), ("step", "bad_step")):
        if key in text:
            return code
    return "decode_error"


class _Refused(Exception):
    """An input the node refuses before the planner sees it; `code` is its diagnostics reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _crop_advice(h: int, w: int, model_h: int, model_w: int, cfg: Any, camera: str) -> str:
    """A centred crop with the model's aspect ratio, when it resizes to the model's size."""
    if w * model_h > h * model_w:  # wider than the model: keep the height
        ch, cw = h, round(h * model_w / model_h)
    else:
        ch, cw = round(w * model_h / model_w), w
    try:
        fits = smart_resize(ch, cw, cfg.factor, cfg.min_pixels, cfg.max_pixels) == (model_h, model_w)
    except ValueError:
        fits = False
    if not fits:
        return f"send images that resize to {model_w}x{model_h} (cameras.{camera}.crop can cut them to shape)"
    return f"crop it to the model's aspect ratio: cameras.{camera}.crop: [{(w - cw) // 2}, {(h - ch) // 2}, {cw}, {ch}]"


def _error_code(exc: BaseException, default: str) -> str:
    return str(getattr(exc, "reason_code", None) or getattr(exc, "code", None) or default)


def _is_time_jump(exc: BaseException) -> bool:
    return type(exc).__name__ == "TimeJumpBackwards" or _error_code(exc, "") == "time_jump"


@dataclass
class _CameraState:
    params: CameraParams
    lock: threading.Lock = field(default_factory=threading.Lock)
    in_decode: bool = False
    # Frames waiting for the decode pool. A tick needs this camera's frames at t0-0.3 ... t0, so a
    # short burst (a driver catching up, a stalled executor) is queued, not collapsed to the newest.
    pending: deque[bytes] = field(default_factory=lambda: deque(maxlen=_PENDING_FRAMES))  # serialized
    last_stamp: float | None = None  # newest frame decoded and buffered
    # Newest stamp handed to the decode pool: a repeat or an older frame is refused in the callback,
    # so it never takes a queue slot from a frame a tick needs.
    newest_queued: float | None = None
    checked_hw: tuple[int, int] | None = None  # (height, width) that passed the model-size check
    # image_resize=fast: learned from the first full decode of this camera
    source_hw: tuple[int, int] = (0, 0)
    target_hw: tuple[int, int] = (0, 0)
    reduce: int = 1


@dataclass
class _OdomSample:
    stamp: float
    position: np.ndarray
    rotation: np.ndarray
    speed: float
    frame_id: str


@dataclass
class _Runtime:
    """Everything configure creates and cleanup releases."""

    params: NodeParams
    backend: Any
    planner: Any
    model_grid: tuple[int, int, int] | None  # (t, h, w) patches the model's vision graph takes; None = any
    stats: NodeDiagnostics
    route: RouteInput
    cameras: dict[str, _CameraState]
    decode_pool: ThreadPoolExecutor
    infer_pool: ThreadPoolExecutor
    pubs: dict[str, Any]
    path_pubs: list[Any]
    lock: threading.Lock = field(default_factory=threading.Lock)  # fallback / last-plan state
    inflight: Future | None = None
    inflight_start: float = 0.0
    timeout_reported: bool = False
    stopping: bool = False  # deactivating: in-flight waits end early
    last_planned_t0: float | None = None
    # Outputs never go back in t0: a result older than what already went out (a fallback overtook
    # it) is dropped. The lock makes check + publish one step for the worker and the timer thread.
    publish_lock: threading.Lock = field(default_factory=threading.Lock)
    last_published_t0: float | None = None
    last_plan: LastPlan | None = None
    last_valid_clock: float | None = None  # node clock (s) of the last valid plan or of activation
    # Bumped when the odometry track restarts (relocalisation, frame switch, time jump): a plan made
    # on an older track cannot be re-expressed on the new one, so it is never kept as the last plan.
    track: int = 0
    last_odom: _OdomSample | None = None
    last_diag_mono: float = 0.0
    subs: list[Any] = field(default_factory=list)
    timers: list[Any] = field(default_factory=list)
    ask_inflight: Future | None = None  # a ~/ask question queued or running on the inference worker
    ask_job: QuestionJob | None = None
    path_cache: PathCache = field(default_factory=PathCache)  # plans only (the inference worker)


def _rotation_from_quat(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


class PlannerNode(LifecycleNode):
    """Managed Alpamayo planner node. See the module docstring and docs/ros_interface.md."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        declare_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        # one mutually exclusive group per input: a stream's messages are handled in order, streams in parallel
        self._input_groups: dict[str, MutuallyExclusiveCallbackGroup] = {}
        self._tick_group = MutuallyExclusiveCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()
        self._ask_group = MutuallyExclusiveCallbackGroup()
        # for the node's lifetime (a response to a destroyed service would raise in the executor): an
        # inactive node answers with the reason
        self.create_service(Ask, "~/ask", self._on_ask, callback_group=self._ask_group)
        self._rt: _Runtime | None = None
        self._configured = False
        self._throttle = Throttle(_LOG_THROTTLE_S)
        self.last_configure_error = ""
        self.last_transition_error = ""
        for err in declare_errors(self):  # said now, not only when configure runs
            self.get_logger().warning(f"{err} (configure fails until a valid value is set)")

    # --- public helpers (tests, benchmarks, main) ------------------------------------------------
    @property
    def stats(self) -> NodeDiagnostics | None:
        return self._rt.stats if self._rt else None

    @property
    def planner(self) -> Any:
        return self._rt.planner if self._rt else None

    def _warn(self, key: str, message: str) -> None:
        if self._throttle.ready(key):
            self.get_logger().warning(message)

    def _error(self, key: str, message: str) -> None:
        if self._throttle.ready(key):
            self.get_logger().error(message)

    # --- parameters -----------------------------------------------------------------------------
    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        if not self._configured:
            for p in params:  # a valid new value replaces one refused at startup
                clear_declare_error(self, p.name)
            return SetParametersResult(successful=True)
        changed = [p.name for p in params if p.name in CONFIGURE_TIME or p.name.startswith("cameras.")]
        if changed:
            return SetParametersResult(
                successful=False,
                reason=f"{', '.join(changed)} take(s) effect at configure; deactivate and cleanup the node, "
                       "set the parameter, then configure again")
        return SetParametersResult(successful=True)

    # --- lifecycle --------------------------------------------------------------------------------
    def _transition(self, name: str, body: Any, state: LifecycleState) -> TransitionCallbackReturn:
        """Run a transition; an exception is logged with its cause (rclpy would turn it into a bare
        ERROR) and answered with ERROR, whose processing releases everything (on_error)."""
        self.last_transition_error = ""
        try:
            return body(state)
        except Exception as exc:
            self.last_transition_error = f"{name} failed: {type(exc).__name__}: {exc}"
            self.get_logger().error(self.last_transition_error)
            return TransitionCallbackReturn.ERROR

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("configure", self._configure, state)

    def _configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            params = read_parameters(self)
        except ParameterError as exc:
            return self._configure_failed(str(exc))
        backend = None
        try:
            backend, planner = self._load(params)
            self._check_variant(params, planner)
            model_grid = self._check_model_capacity(params, backend)
            if params.warmup:
                t = time.perf_counter()
                self._warmup(planner, params)
                self.get_logger().info(f"warm-up tick took {1e3 * (time.perf_counter() - t):.0f} ms")
        except ParameterError as exc:
            self._close_backend(backend)
            return self._configure_failed(str(exc))
        except Exception as exc:  # any backend failure must leave the node unconfigured
            self._close_backend(backend)
            return self._configure_failed(
                f"parameter 'backend'/'model_dir': backend '{params.backend}' could not run model_dir "
                f"'{params.model_dir}': {type(exc).__name__}: {exc}. Fix: check the model directory and "
                "the backend's dependencies")
        self._rt = self._make_runtime(params, backend, planner, model_grid)
        self._configured = True
        self.last_configure_error = ""
        self.get_logger().info(
            f"configured: backend={params.backend} model_id={self._rt.stats.model_id} K={params.num_candidates} "
            f"cameras={[c.name for c in params.cameras]} frame_mode={params.frame_mode}")
        return TransitionCallbackReturn.SUCCESS

    def _configure_failed(self, message: str) -> TransitionCallbackReturn:
        self.last_configure_error = message
        self.last_transition_error = f"configure failed: {message}"
        self.get_logger().error(self.last_transition_error)
        return TransitionCallbackReturn.FAILURE

    @staticmethod
    def _check_variant(params: NodeParams, planner: Any) -> None:
        """Parameters only some models have (the camera set was checked when the planner was built)."""
        variant = planner.variant
        if params.nav_guidance_weight > 0.0 and not variant.route:
            raise ParameterError("nav_guidance_weight", f"{variant.display_name} has no navigation input to guide by",
                                 "set nav_guidance_weight: 0.0, or use an Alpamayo 1.5 model directory")
        executor = getattr(getattr(planner.backend, "orchestrator", None), "executor", None)
        if params.nav_guidance_weight > 0.0 and executor is not None and not executor.supports_guidance:
            raise ParameterError("nav_guidance_weight", f"backend '{params.backend}' has no `extend` graph/engine "
                                 "(navigation guidance needs it)", "set nav_guidance_weight: 0.0, or re-export the ONNX "
                                 "(export-onnx) / rebuild the engines with `extend`")

    @staticmethod
    def _check_model_capacity(params: NodeParams, backend: Any) -> tuple[int, int, int] | None:
        """What the graphs/engines were built for (the executor checked config.json against their
        manifest when it loaded them): the decode capacity and batch, so a request beyond them fails
        configure instead of every tick; returns the image grid the vision graph takes."""
        graphs = getattr(getattr(backend, "orchestrator", None), "config", None)  # runtime.RuntimeConfig
        if graphs is None:  # kinematic: no graphs; the model directory still says what images fit
            from alpamayo_ros.runtime.config import load_config

            try:
                graphs = load_config(params.model_dir)
            except (OSError, ValueError, TypeError):
                return None
            return tuple(int(v) for v in graphs.image_grid_thw)  # type: ignore[return-value]
        source = {"tensorrt": "the engine manifest", "onnxruntime": "the ONNX graphs' manifest"}.get(
            params.backend, "config.json")
        decode_capacity = int(graphs.suffix_capacity) + 1  # the orchestrator's stop rule: suffix slots + 1
        if params.max_generation_length > decode_capacity:
            raise ParameterError(
                "max_generation_length",
                f"{params.max_generation_length} exceeds the decode capacity of the model's graphs, "
                f"{decode_capacity} tokens (runtime.suffix_capacity {graphs.suffix_capacity} + 1, from {source})",
                f"set max_generation_length <= {decode_capacity}, or export/build the graphs with a larger "
                "runtime.suffix_capacity in config.json")
        if params.num_candidates > int(graphs.max_candidates):
            raise ParameterError(
                "num_candidates", f"{params.num_candidates} exceeds the graphs' batch capacity "
                f"max_candidates={graphs.max_candidates} (from {source})",
                f"set num_candidates <= {graphs.max_candidates}, or build the engines for a larger max_candidates")
        return tuple(int(v) for v in graphs.image_grid_thw)  # type: ignore[return-value]

    def _load(self, params: NodeParams) -> tuple[Any, Any]:
        from alpamayo_ros.core.planner import build_planner
        from alpamayo_ros.runtime import create_backend
        from alpamayo_ros.runtime.image_resize import planner_resizer

        options = backend_options(params)
        config = planner_config(params)
        backend = create_backend(params.backend, params.model_dir, **options)
        try:
            planner = build_planner(backend, params.model_dir, config, exact_resizer=planner_resizer(params))
        except ValueError as exc:
            self._close_backend(backend)
            if "camera" in str(exc):
                raise ParameterError("camera_names", f"the model rejects this camera set: {exc}",
                                     "map the cameras the model was trained with (cameras.*.model_camera_id)") from exc
            raise ParameterError("model_dir", f"the model directory is inconsistent: {exc}",
                                 "regenerate its tokenizer/config (see the message)") from exc
        except Exception:
            self._close_backend(backend)
            raise
        return backend, planner

    @staticmethod
    def _warmup(planner: Any, params: NodeParams) -> None:
        """One synthetic tick (grey frames, standing still) so the first real tick is not the slowest."""
        grey = np.full((320, 576, 3), 128, dtype=np.uint8)
        for i in range(4):
            for cam_id in params.camera_ids:
                planner.add_image(cam_id, _WARMUP_T0 - 0.3 + 0.1 * i, grey)
        q = np.array([0.0, 0.0, 0.0, 1.0])
        for i in range(101):
            planner.add_odometry(_WARMUP_T0 - 2.0 + 0.02 * i, np.zeros(3), q, np.zeros(3))
        try:
            planner.plan(_WARMUP_T0)
        finally:
            planner.reset()

    def _make_runtime(self, params: NodeParams, backend: Any, planner: Any,
                      model_grid: tuple[int, int, int] | None) -> _Runtime:
        names = [c.name for c in params.cameras]
        stats = NodeDiagnostics(self.get_name(), names + [_ODOM], params.latency_window,
                                silent_after_s=max(1.0, 3.0 / params.rate_hz), cameras=names,
                                decode_workers=params.image_workers, max_camera_lag_s=params.max_camera_lag_s,
                                odometry=_ODOM)
        ident = getattr(backend, "identity", None)
        stats.backend_name = getattr(ident, "name", params.backend)
        stats.model_id = getattr(ident, "model_id", "")
        stats.normalization = planner.normalization.describe()
        stats.nav_guidance_weight = params.nav_guidance_weight
        route = RouteInput(params.route, planner.variant.route, planner.variant.display_name, stats, self._warn)
        pubs = {
            "candidates": self._lc_pub(TrajectoryCandidates, "~/candidates"),
            "selected": self._lc_pub(Path, "~/selected_path"),
            "reasoning": self._lc_pub(String, "~/reasoning"),
            "markers": self._lc_pub(MarkerArray, "~/markers"),
            "diagnostics": self._make_diag_publisher(),
        }
        path_pubs = [self._lc_pub(Path, f"~/candidate_{k}/path") for k in range(params.num_candidates)]
        return _Runtime(
            params=params, backend=backend, planner=planner, model_grid=model_grid, stats=stats, route=route,
            cameras={c.name: _CameraState(c) for c in params.cameras},
            decode_pool=ThreadPoolExecutor(params.image_workers, thread_name_prefix="alpamayo_decode"),
            infer_pool=ThreadPoolExecutor(1, thread_name_prefix="alpamayo_infer"),
            pubs=pubs, path_pubs=path_pubs)

    def _make_diag_publisher(self) -> Any:
        from diagnostic_msgs.msg import DiagnosticArray

        return self._lc_pub(DiagnosticArray, "/diagnostics", 10)

    def _lc_pub(self, msg_type: Any, topic: str, qos: QoSProfile | int = _OUT_QOS) -> Any:
        return self.create_lifecycle_publisher(msg_type, topic, qos, event_callbacks=_no_pub_events())

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("activate", self._activate, state)

    def _activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        rt = self._rt
        if rt is None:
            return TransitionCallbackReturn.FAILURE
        ret = super().on_activate(state)  # lifecycle publishers go live
        p = rt.params
        for cam in p.cameras:
            # raw: the executor hands over the serialized bytes; deserializing (0.7 s for a 192 MB
            # frame) happens in the decode pool, after the size check, never on the executor thread
            rt.subs.append(self.create_subscription(
                _msg_type(cam), cam.topic, lambda data, name=cam.name: self._on_image(name, data),
                _qos(cam.reliability, cam.depth), callback_group=self._input_group(cam.name),
                event_callbacks=_no_sub_events(), raw=True))
        rt.subs.append(self.create_subscription(
            Odometry, p.odometry_topic, self._on_odometry, _qos(p.odometry_reliability, p.odometry_depth),
            callback_group=self._input_group(_ODOM), event_callbacks=_no_sub_events()))
        rt.subs.append(self.create_subscription(
            String, p.route.topic, lambda msg: rt.route.on_message(msg.data, self._now()), route_qos(),
            callback_group=self._input_group("route"), event_callbacks=_no_sub_events()))
        rt.timers.append(self.create_timer(1.0 / p.rate_hz, self._on_tick, callback_group=self._tick_group))
        rt.timers.append(self.create_timer(p.diagnostics_period_s, self._publish_diagnostics,
                                           callback_group=self._diag_group))
        rt.last_valid_clock = None  # armed by the first check (the sim clock may not have started yet)
        rt.timeout_reported = False
        rt.stopping = False
        self.get_logger().info(f"active: planning at {p.rate_hz:g} Hz")
        return ret

    def _input_group(self, name: str) -> MutuallyExclusiveCallbackGroup:
        if name not in self._input_groups:
            self._input_groups[name] = MutuallyExclusiveCallbackGroup()
        return self._input_groups[name]

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("deactivate", self._deactivate, state)

    def _deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("cleanup", self._cleanup, state)

    def _cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._transition("shutdown", self._shutdown, state)

    def _shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        cause = f" after: {self.last_transition_error}" if self.last_transition_error else ""
        self.get_logger().error(f"error in state '{state.label}'{cause}; releasing resources")
        self._stop_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_inputs(self) -> None:
        rt = self._rt
        if rt is None:
            return
        for timer in rt.timers:
            self.destroy_timer(timer)
        for sub in rt.subs:
            self.destroy_subscription(sub)
        rt.timers.clear()
        rt.subs.clear()
        rt.stopping = True
        inflight = rt.inflight
        if inflight is not None:
            try:
                inflight.result(timeout=max(5.0, 2 * rt.params.fallback.inference_timeout_s))
            except Exception as exc:  # drained; its failure was already reported
                self.get_logger().warning(f"in-flight tick ended with {type(exc).__name__} while draining")

    def _release(self) -> None:
        rt, self._rt = self._rt, None
        self._configured = False
        if rt is None:
            return
        if rt.ask_job is not None:  # a question still waiting: answered now, not left hanging
            rt.ask_job.fail(rt.stats, "the node is cleaning up")
        rt.decode_pool.shutdown(wait=True, cancel_futures=True)
        rt.infer_pool.shutdown(wait=True, cancel_futures=True)
        for pub in list(rt.pubs.values()) + rt.path_pubs:
            self.destroy_lifecycle_publisher(pub)
        self._close_backend(rt.backend)

    def _close_backend(self, backend: Any) -> None:
        if backend is None:
            return
        try:
            backend.close()
        except Exception as exc:  # cleanup must finish
            self.get_logger().warning(f"backend.close() raised {type(exc).__name__}: {exc}")

    # --- clock --------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # --- inputs (executor threads: keep cheap) ------------------------------------------------------
    def _on_image(self, name: str, data: bytes) -> None:
        rt = self._rt
        if rt is None:
            return
        t = time.perf_counter()
        rt.stats.received(name)
        cam = rt.cameras[name]
        try:
            self._admit(rt, cam, data)
        except _Refused as exc:
            self._reject(rt, name, exc.code, str(exc))
            rt.stats.callback_cost(time.perf_counter() - t)
            return
        with cam.lock:
            if cam.in_decode:
                if len(cam.pending) == cam.pending.maxlen:
                    rt.stats.dropped(name)  # the oldest waiting frame falls out
                cam.pending.append(data)
                rt.stats.callback_cost(time.perf_counter() - t)
                return
            cam.in_decode = True
        try:
            rt.decode_pool.submit(self._decode_task, rt, cam, data)
        except RuntimeError:  # pool shut down by a concurrent cleanup
            with cam.lock:
                cam.in_decode = False
        rt.stats.callback_cost(time.perf_counter() - t)

    def _admit(self, rt: _Runtime, cam: _CameraState, data: bytes) -> None:
        """Checks on the serialized message, on the executor thread, before it is queued: size (an
        oversized frame would stall every input while it is deserialized and decoded) and stamp
        order (a repeated or older frame must not take a queue slot from a frame a tick needs)."""
        if len(data) > rt.params.max_image_bytes:
            raise _Refused("image_too_large", f"message of {len(data)} bytes exceeds max_image_bytes="
                           f"{rt.params.max_image_bytes}; raise max_image_bytes if the camera really sends this")
        stamp = serialized_header_stamp(data)
        if stamp is not None and stamp > 0.0:
            with cam.lock:
                newest = cam.newest_queued
                if newest is not None and newest - rt.params.time_jump_threshold_s <= stamp <= newest:
                    if stamp == newest:
                        raise _Refused("duplicate", f"stamp {stamp:.3f} repeats the previous frame's")
                    raise _Refused("out_of_order", f"stamp {stamp:.3f} is not newer than {newest:.3f}")
                cam.newest_queued = stamp  # a jump further back is a time jump: the decode task resets

    def _decode_task(self, rt: _Runtime, cam: _CameraState, data: bytes) -> None:
        """One frame, then hand the camera's pending frame back to the pool queue (not a loop:
        a camera whose frames always arrive before the last is done must not starve the others)."""
        try:
            self._process_frame(rt, cam, data)
        finally:
            with cam.lock:
                nxt = cam.pending.popleft() if cam.pending else None
                if nxt is None:
                    cam.in_decode = False
            if nxt is not None:
                try:
                    rt.decode_pool.submit(self._decode_task, rt, cam, nxt)
                except RuntimeError:  # pool shut down by a concurrent cleanup
                    with cam.lock:
                        cam.in_decode = False

    def _process_frame(self, rt: _Runtime, cam: _CameraState, data: bytes) -> None:
        name = cam.params.name
        try:
            msg = deserialize_message(data, _msg_type(cam.params))
        except Exception as exc:  # not a message of this type at all
            self._reject(rt, name, "corrupt", f"cannot deserialize a {_msg_type(cam.params).__name__}: {exc}")
            return
        stamp = stamp_to_sec(msg.header.stamp)
        if stamp <= 0.0:
            self._reject(rt, name, "no_stamp", "header.stamp is zero; the driver must stamp images")
            return
        last = cam.last_stamp
        if last is not None and stamp < last - rt.params.time_jump_threshold_s:
            self._time_jump(rt, f"camera '{name}' stamp went back {last - stamp:.3f} s ({last:.3f} -> {stamp:.3f})")
        elif last is not None and stamp <= last:
            self._reject(rt, name, "out_of_order", f"stamp {stamp:.3f} is not newer than {last:.3f}")
            return
        t = time.perf_counter()
        try:
            dims = image_dims(msg)
            too_large = oversize_reason(msg, dims, rt.params.max_image_bytes)
            if too_large:
                raise _Refused("image_too_large", too_large)
            if dims is not None:
                self._check_model_size(rt, cam, *dims)
            rgb = self._decode(rt, cam, msg)
            if dims is None:
                self._check_model_size(rt, cam, *rgb.shape[:2], cropped=True)
            rt.planner.add_image(cam.params.model_camera_id, stamp, rgb)
        except _Refused as exc:
            self._reject(rt, name, exc.code, str(exc))
            return
        except (ImageDecodeError, ValueError) as exc:
            self._reject(rt, name, _decode_reason(str(exc)), str(exc))
            return
        cam.last_stamp = stamp
        rt.stats.accepted(name, time.perf_counter() - t, stamp=stamp)

    def _check_model_size(self, rt: _Runtime, cam: _CameraState, height: int, width: int,
                          cropped: bool = False) -> None:
        """The image (after the crop) must resize to the grid the model's vision graph takes."""
        if rt.model_grid is None or (height, width) == cam.checked_hw or height <= 0 or width <= 0:
            return  # (an empty image is the decoder's to name)
        crop = cam.params.crop
        h, w = (height, width) if cropped else cropped_dims(height, width, crop)
        cfg = rt.planner.inputs.processor
        try:
            oh, ow = smart_resize(h, w, cfg.factor, cfg.min_pixels, cfg.max_pixels)
        except ValueError as exc:  # zero size, absurd aspect ratio
            raise _Refused("image_size_mismatch", str(exc)) from exc
        grid = (1, oh // cfg.patch_size, ow // cfg.patch_size)
        if grid != rt.model_grid:
            mh, mw = rt.model_grid[1] * cfg.patch_size, rt.model_grid[2] * cfg.patch_size
            raise _Refused("image_size_mismatch", (
                f"a {w}x{h} image resizes to {ow}x{oh} (grid {list(grid)}), the model takes {mw}x{mh} "
                f"(grid {list(rt.model_grid)}); {_crop_advice(h, w, mh, mw, cfg, cam.params.name)}"))
        cam.checked_hw = (height, width)

    def _decode(self, rt: _Runtime, cam: _CameraState, msg: Any) -> np.ndarray:
        """Message -> RGB for the planner; with image_resize=fast, already at the model's size."""
        fast = rt.params.image_resize == "fast"
        rgb = None
        if fast and cam.params.crop is None and cam.reduce > 1 and isinstance(msg, CompressedImage):
            rgb = decode_jpeg_reduced(msg, cam.reduce)
            if rgb is not None and (rgb.shape[0] * cam.reduce < cam.source_hw[0] - cam.reduce
                                    or rgb.shape[1] * cam.reduce < cam.source_hw[1] - cam.reduce):
                rgb = None  # the camera changed resolution: decode fully and re-learn
        if rgb is None:
            rgb = apply_crop(decode_image_msg(msg), cam.params.crop)
            if fast:
                self._learn_reduction(rt, cam, rgb.shape[0], rgb.shape[1])
        if not fast:
            return rgb
        return fast_resize(rgb, *cam.target_hw)

    @staticmethod
    def _learn_reduction(rt: _Runtime, cam: _CameraState, height: int, width: int) -> None:
        """Model size for this source size, and the largest JPEG reduction that stays above it."""
        cfg = rt.planner.inputs.processor
        oh, ow = smart_resize(height, width, cfg.factor, cfg.min_pixels, cfg.max_pixels)
        cam.source_hw, cam.target_hw = (height, width), (oh, ow)
        cam.reduce = max([1] + [r for r in (2, 4, 8) if height // r >= oh and width // r >= ow])

    def _reject(self, rt: _Runtime, name: str, reason: str, message: str) -> None:
        rt.stats.rejected(name, reason, message)
        self._warn(f"{name}.{reason}", f"input '{name}' rejected ({reason}): {message}")
        self._diag_event(rt)

    def _time_jump(self, rt: _Runtime, why: str) -> None:
        """Time went backwards (bag loop, clock reset): drop every buffered input and the last plan."""
        self.get_logger().warning(f"time jump: {why}; resetting the input buffers")
        # The cameras' last stamps are forgotten before the buffers are cleared, never after: another
        # camera's decode thread may buffer a pre-jump frame in between, and that frame must go with the
        # clear. Forgotten after it, the frame would stay with nothing to detect it, pin its buffer's
        # newest stamp ahead of the new timeline and prune every new frame until time caught up.
        for cam in rt.cameras.values():
            cam.last_stamp = None
        rt.planner.reset()
        rt.route.clear()
        with rt.lock:
            rt.last_plan = None
            rt.track += 1
            rt.last_planned_t0 = None
            rt.last_odom = None
            rt.last_valid_clock = None
        with rt.publish_lock:
            rt.last_published_t0 = None  # a new timeline: output order restarts
        rt.stats.time_jump()
        self._diag_event(rt)

    def _relocalised(self, rt: _Runtime, why: str) -> None:
        """The odometry track restarted (a jump that stayed, a frame switch): the last plan cannot be
        re-expressed through the jump, so a fallback until the history refills is a stop path."""
        with rt.lock:
            rt.last_plan = None
            rt.track += 1
        rt.stats.relocalisation(why)
        self._warn("relocalisation", why)
        self._diag_event(rt)

    def _on_odometry(self, msg: Odometry) -> None:
        rt = self._rt
        if rt is None:
            return
        rt.stats.received(_ODOM)
        stamp = stamp_to_sec(msg.header.stamp)
        rt.stats.stage("odometry_arrival_lag", self._now() - stamp)  # transport + executor delay
        pp, qq, vv = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist.linear
        pos = np.array([pp.x, pp.y, pp.z])
        quat = np.array([qq.x, qq.y, qq.z, qq.w])
        vel = np.array([vv.x, vv.y, vv.z])
        frame_id = msg.header.frame_id
        with rt.lock:
            last_odom = rt.last_odom
        last = last_odom.stamp if last_odom is not None else None
        if last is not None and stamp < last - rt.params.time_jump_threshold_s:
            self._time_jump(rt, f"odometry stamp went back {last - stamp:.3f} s ({last:.3f} -> {stamp:.3f})")
        elif last is not None and stamp <= last:
            self._reject(rt, _ODOM, "out_of_order", f"stamp {stamp:.3f} is not newer than {last:.3f}")
            return
        elif last_odom is not None and frame_id != last_odom.frame_id:
            rt.planner.poses.relocalise(stamp)  # poses in two frames are not one motion
            self._relocalised(rt, f"odometry frame_id changed from '{last_odom.frame_id}' to '{frame_id}' at "
                                  f"{stamp:.3f}: pose history reset; planning resumes once the history refills")
        try:
            self._add_odometry(rt, stamp, pos, quat, vel)
        except Exception as exc:  # every bad pose is reported, none stops the node
            self._reject(rt, _ODOM, _error_code(exc, "bad_pose"), str(exc))
            return
        self._continuity_events(rt)
        rt.stats.accepted(_ODOM, stamp=stamp)
        rt.stats.odometry_frame(frame_id)
        sample = _OdomSample(stamp, pos, _rotation_from_quat(quat), float(np.linalg.norm(vel)), frame_id)
        with rt.lock:
            rt.last_odom = sample

    def _continuity_events(self, rt: _Runtime) -> None:
        """What the pose buffer decided about a pose that jumped: outlier (dropped) or relocalisation."""
        from alpamayo_ros.core.egomotion import ContinuityEvent

        for event in rt.planner.poses.pop_events():
            if event.kind == ContinuityEvent.RELOCALISATION:
                self._relocalised(rt, event.message)
            else:
                self._reject(rt, _ODOM, "position_jump", event.message)

    def _add_odometry(self, rt: _Runtime, stamp: float, pos: np.ndarray, quat: np.ndarray, vel: np.ndarray) -> None:
        try:
            rt.planner.add_odometry(stamp, pos, quat, vel)
        except Exception as exc:
            if not _is_time_jump(exc):
                raise
            self._time_jump(rt, f"odometry: {exc}")
            rt.planner.add_odometry(stamp, pos, quat, vel)

    # --- planning -----------------------------------------------------------------------------
    def _on_tick(self) -> None:
        rt = self._rt
        if rt is None:
            return
        now = time.monotonic()
        if rt.ask_inflight is not None and not rt.ask_inflight.done():
            rt.stats.tick_busy()  # the worker answers a question; the next tick waits for it
            return
        if rt.inflight is not None and not rt.inflight.done():
            rt.stats.tick_busy()
            if not rt.timeout_reported and now - rt.inflight_start > rt.params.fallback.inference_timeout_s:
                rt.timeout_reported = True
                self._warn("inference_timeout", f"tick in flight for {now - rt.inflight_start:.2f} s "
                           f"(> fallback.inference_timeout_s={rt.params.fallback.inference_timeout_s})")
                self._fallback(rt, "inference_timeout")
            return
        rt.inflight_start = now
        rt.timeout_reported = False
        try:
            rt.inflight = rt.infer_pool.submit(self._run_tick, rt, now)
        except RuntimeError:  # pool shut down by a concurrent cleanup
            rt.inflight = None

    def _run_tick(self, rt: _Runtime, tick_start: float) -> None:
        from alpamayo_ros.core.planner import TickNotReady

        planner = rt.planner
        track = rt.track
        try:
            t0 = planner.latest_ready_t0()
            if t0 is not None and t0 == rt.last_planned_t0:
                # Timer and cameras run at similar rates with no fixed phase: wait up to half a period
                # for the next complete input instead of skipping the whole period.
                deadline = tick_start + 0.5 / rt.params.rate_hz
                while t0 == rt.last_planned_t0 and time.monotonic() < deadline and not rt.stopping:
                    time.sleep(_NEW_INPUT_POLL_S)
                    t0 = planner.latest_ready_t0()
                if t0 is not None and t0 == rt.last_planned_t0:
                    rt.stats.tick_no_new_input()
                    self._check_input_timeout(rt, "no_new_input")
                    return
                tick_start = time.monotonic()  # latency counts from when the input was complete
            cpu_start = time.thread_time()
            result = planner.plan(t0, route=rt.route.current(self._now()) if rt.route.supported else None)
        except TickNotReady as exc:
            code = str(getattr(exc, "code", "not_ready"))
            rt.stats.tick_not_ready(code, str(exc))
            self._warn(f"not_ready.{code}", f"tick not ready ({code}): {exc}")
            self._check_input_timeout(rt, f"not_ready:{code}")
            return
        except Exception as exc:  # a backend failure must not kill the node
            rt.stats.backend_error(f"{type(exc).__name__}: {exc}")
            self._error(f"backend_error.{type(exc).__name__}", f"tick failed in the backend: {type(exc).__name__}: {exc}")
            self._fallback(rt, "backend_error")
            self._diag_event(rt)
            return
        rt.last_planned_t0 = result.t0
        t_pub = time.perf_counter()
        self._handle_result(rt, result, track)
        rt.stats.stage("publish", time.perf_counter() - t_pub)
        for stage in ("select", "inputs", "rollout"):
            if stage in result.timings_s:
                rt.stats.stage(f"core_{stage}", float(result.timings_s[stage]))
        backend_s = float(result.timings_s.get("backend", 0.0))
        rt.stats.tick_done(time.monotonic() - tick_start, backend_s)
        # CPU time of this thread for plan + publish: immune to waiting for a busy CPU (shared hosts)
        rt.stats.stage("tick_cpu", time.thread_time() - cpu_start)

    def _check_input_timeout(self, rt: _Runtime, why: str) -> None:
        now = self._now()
        if now <= 0.0:  # use_sim_time and no /clock yet
            return
        with rt.lock:
            if rt.last_valid_clock is None or now < rt.last_valid_clock:  # first check, or the clock jumped back
                rt.last_valid_clock = now
                return
            expired = now - rt.last_valid_clock > rt.params.fallback.input_timeout_s
        if expired:
            self._fallback(rt, f"input_timeout:{why}")

    def _handle_result(self, rt: _Runtime, result: Any, track: int) -> None:
        in_gate = result.input_gate
        if not in_gate.ok:
            rt.stats.gate_trip("input", list(in_gate.reasons))
        for gate in result.output_gates:
            if not gate.ok:
                rt.stats.gate_trip("output", list(gate.reasons))
        selected = result.drive_index
        if selected is None:
            kind, reasons = result.rejection
            self._warn(kind, f"plan at t0={result.t0:.3f} rejected by the {kind.replace('_', ' ')}: {reasons}")
            self._fallback(rt, f"{kind}:{','.join(reasons)}", t0=result.t0, pose=result.t0_pose_world, v0=result.v0)
            self._diag_event(rt)
            return
        last = LastPlan(t0=float(result.t0), dt=float(result.dt), xyz=np.asarray(result.xyz), yaw=np.asarray(result.yaw),
                        pose_world=result.t0_pose_world, scores=[float(s) for s in result.scores],
                        selected=selected, reasoning=list(result.reasoning))
        extras = CandidateExtras(
            scores=last.scores, selected=selected, reasoning=last.reasoning,
            acceleration=np.asarray(result.acceleration), curvature=np.asarray(result.curvature), v0=float(result.v0),
            model_id=rt.stats.model_id, backend=rt.stats.backend_name,
            inference_time_s=float(result.timings_s.get("backend", 0.0)),
            route_instruction=result.route_instruction, nav_guidance_weight=result.nav_guidance_weight)
        if not self._publish(rt, last.t0, last.dt, last.xyz, last.yaw, result.t0_pose_world, extras,
                             per_candidate=True, cache=rt.path_cache, kind="plan"):
            return
        with rt.lock:
            if rt.track == track:
                rt.last_plan = last
            rt.last_valid_clock = self._now()

    # --- fallback -------------------------------------------------------------------------------
    def _fallback(self, rt: _Runtime, reason: str, t0: float | None = None,
                  pose: tuple[np.ndarray, np.ndarray] | None = None, v0: float | None = None) -> None:
        fb = rt.params.fallback
        with rt.lock:
            odom, last = rt.last_odom, rt.last_plan
        if t0 is None or pose is None:
            if odom is None:  # nothing to stamp it with: never invent a time
                rt.stats.fallback(reason, published=False)
                return
            t0, pose = odom.stamp, (odom.position, odom.rotation)
        if v0 is None:
            v0 = odom.speed if odom is not None else 0.0
        if fb.policy == "none":
            rt.stats.fallback(reason, published=False)
            return
        n, dt = 64, 0.1
        if last is not None:
            n, dt = last.yaw.shape[1], last.dt
        if fb.policy == "last_valid" and last is not None and 0.0 <= t0 - last.t0 <= fb.max_last_valid_age_s:
            xyz, yaw = reexpress_plan(last, t0, pose)
            extras = CandidateExtras(scores=last.scores, selected=last.selected, reasoning=last.reasoning,
                                     acceleration=None, curvature=None, v0=float(v0), model_id=rt.stats.model_id,
                                     backend=rt.stats.backend_name, fallback=True, fallback_reason=reason)
            per_candidate = True
        else:
            xyz, yaw = stop_trajectory(float(v0), n, dt, fb.stop_decel_mps2)
            extras = CandidateExtras(scores=[0.0], selected=0, reasoning=[f"fallback stop: {reason}"],
                                     acceleration=None, curvature=None, v0=float(v0), model_id=rt.stats.model_id,
                                     backend=rt.stats.backend_name, fallback=True, fallback_reason=reason)
            per_candidate = False
        published = self._publish(rt, float(t0), dt, xyz, yaw, pose, extras, per_candidate=per_candidate,
                                  kind=f"fallback ({reason})")
        rt.stats.fallback(reason, published=published)
        if not published:
            return
        with rt.lock:
            rt.last_valid_clock = self._now()  # re-arm the input timeout: one fallback per timeout period

    # --- outputs ----------------------------------------------------------------------------------
    def _frame(self, rt: _Runtime, pose: Any) -> tuple[str, Any]:
        p = rt.params
        if p.frame_mode == "ego":
            return p.ego_frame_id, None
        with rt.lock:
            odom_frame = rt.last_odom.frame_id if rt.last_odom is not None else ""
        return (p.odometry_frame_id or odom_frame or "odom"), pose

    def _publish(self, rt: _Runtime, t0: float, dt: float, xyz: np.ndarray, yaw: np.ndarray, pose: Any,
                 extras: CandidateExtras, *, per_candidate: bool, cache: PathCache | None = None,
                 kind: str = "plan") -> bool:
        """Publish one plan or fallback, unless an output with a newer t0 already went out (False:
        dropped and counted). `cache` only from the inference worker (fallbacks may come from the
        timer thread while the worker publishes)."""
        with rt.publish_lock:
            newest = rt.last_published_t0
            if newest is not None and t0 < newest:
                why = f"{kind} for t0={t0:.3f} finished after an output for t0={newest:.3f} went out"
                rt.stats.result_overtaken(why)
                self._warn(f"overtaken.{kind.split(' ')[0]}", f"dropped: {why} (outputs never go back in time)")
                return False
            rt.last_published_t0 = t0
            self._send(rt, t0, dt, xyz, yaw, pose, extras, per_candidate=per_candidate, cache=cache)
        return True

    def _send(self, rt: _Runtime, t0: float, dt: float, xyz: np.ndarray, yaw: np.ndarray, pose: Any,
              extras: CandidateExtras, *, per_candidate: bool, cache: PathCache | None) -> None:
        frame_id, world_pose = self._frame(rt, pose)
        traj = express_in_frame(xyz, yaw, t0, dt, frame_id, world_pose)
        paths = cache.paths(traj) if cache is not None else [make_path(traj, k) for k in range(traj.xyz.shape[0])]
        extras.input_to_publish_s = self._now() - t0
        rt.pubs["candidates"].publish(make_candidates_msg(paths, traj, extras))
        if per_candidate:
            for pub, path in zip(rt.path_pubs, paths, strict=False):
                if pub.get_subscription_count():  # serializing 64 poses nobody reads costs ~0.5 ms each
                    pub.publish(path)
        rt.pubs["selected"].publish(paths[extras.selected])
        rt.pubs["reasoning"].publish(String(data=extras.reasoning[extras.selected] if extras.reasoning else ""))
        if rt.params.publish_markers and rt.pubs["markers"].get_subscription_count():
            text = extras.reasoning[extras.selected] if extras.reasoning else ""
            rt.pubs["markers"].publish(make_markers(traj, extras.selected, text, extras.fallback, paths))

    def _check_input_graph(self, rt: _Runtime) -> None:
        """Explain a silent input from the graph: no publisher, wrong type, or incompatible QoS."""
        p = rt.params
        inputs = [(c.name, c.topic, "sensor_msgs/msg/" + ("CompressedImage" if c.transport == "compressed" else "Image"),
                   c.reliability) for c in p.cameras]
        inputs.append((_ODOM, p.odometry_topic, "nav_msgs/msg/Odometry", p.odometry_reliability))
        for name, topic, msg_type, reliability in inputs:
            try:
                pubs = self.get_publishers_info_by_topic(self.resolve_topic_name(topic))
            except Exception:  # the graph is advisory; never fail diagnostics on it
                continue
            note = ""
            if not pubs:
                note = f"no publisher on {topic}"
            elif all(info.topic_type != msg_type for info in pubs):
                types = sorted({info.topic_type for info in pubs})
                note = f"publishers send {types}, this input expects {msg_type} (check the transport parameter)"
            elif reliability == "reliable" and all(
                    info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for info in pubs):
                note = (f"publishers on {topic} are best_effort and this subscription is reliable: nothing "
                        "arrives; set its reliability parameter to best_effort")
            rt.stats.graph_note(name, note)

    def _publish_diagnostics(self) -> None:
        rt = self._rt
        if rt is None:
            return
        rt.last_diag_mono = time.monotonic()
        self._check_input_graph(rt)
        if rt.route.supported:
            rt.route.current(self._now())  # an instruction that aged out is reported even between ticks
        load = rt.stats.decode_load(time.monotonic())
        if load > 0.9:
            self._warn("decode_saturated", f"image preprocessing is saturated (load {load:.2f}): frames are "
                       "dropped and ticks may not form; set image_resize: fast or raise image_workers")
        arr = to_diagnostic_array(rt.stats.snapshot(), self.get_clock().now().to_msg(), self.get_fully_qualified_name())
        rt.pubs["diagnostics"].publish(arr)

    def _diag_event(self, rt: _Runtime) -> None:
        """Publish diagnostics right after an event, at most every _DIAG_EVENT_MIN_PERIOD_S."""
        if time.monotonic() - rt.last_diag_mono >= _DIAG_EVENT_MIN_PERIOD_S:
            self._publish_diagnostics()


    # --- questions (~/ask, Alpamayo 1.5) ------------------------------------------------------------
    async def _on_ask(self, request: Any, response: Any) -> Any:
        """Queue the question on the inference worker (behind the tick in progress) and await its answer;
        a coroutine, so the executor keeps serving inputs and timers meanwhile."""
        from rclpy.clock import Clock, ClockType
        from rclpy.task import Future as RclpyFuture

        rt = self._rt
        refusal = "the node is not active" if rt is None or rt.stopping or not rt.timers else ""
        question = ""
        if rt is not None:
            try:
                question = QuestionJob.check(request.question, rt.params.ask)
            except PromptTextError as exc:
                refusal = str(exc)
            if not refusal and rt.ask_inflight is not None and not rt.ask_inflight.done():
                refusal = "another question is being answered; ask again when it is done"
        if refusal:
            if rt is not None:
                rt.stats.question(False, error=refusal)
            response.success, response.message = False, refusal
            return response
        assert rt is not None
        done: RclpyFuture = RclpyFuture(executor=self.executor)
        done.add_done_callback(lambda _f: None)  # set_result from the worker then wakes the executor
        job = QuestionJob(question, rt.params.ask, time.monotonic() + rt.params.ask.timeout_s, done.set_result)
        rt.ask_job = job
        timeout = self.create_timer(
            rt.params.ask.timeout_s, lambda: job.fail(rt.stats, f"timed out after ask.timeout_s="
                                                                 f"{rt.params.ask.timeout_s:g} s"),
            callback_group=self._ask_group, clock=Clock(clock_type=ClockType.STEADY_TIME))
        try:
            rt.ask_inflight = rt.infer_pool.submit(job.run, rt.planner, rt.stats)
        except RuntimeError:  # pool shut down by a concurrent cleanup
            job.fail(rt.stats, "the node is shutting down")
        fields = await done
        self.destroy_timer(timeout)
        self._diag_event(rt)
        response.success, response.message = fields["success"], fields["message"]
        response.answer, response.complete = fields["answer"], fields["complete"]
        response.frames_stamp = time_msg(fields["frames_stamp_s"])
        response.inference_time = duration_msg(fields["inference_time_s"])
        return response
