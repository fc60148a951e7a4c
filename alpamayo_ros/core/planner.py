"""The Planner: one tick of Alpamayo-R1, from buffered inputs to scored candidate trajectories.

The ROS node and the offline replay both drive this class, so a replay measures the code that
drives the car. A tick is (DESIGN.md §2):

    select frames at t0 → model inputs (cached preprocessing, prompt, positions, history tokens)
    → backend.infer (vision, prefill, decode, expert) → action_to_traj → gates → scores → selection

t0 policy: the newest camera stamp at which every camera fills its 4 slots with the latest frame at or
before each slot target (``FrameStore.latest_common_t0``; the newest frame of every camera is at or
before t0) and odometry reaches it. When odometry lags the cameras, t0 moves back to the newest such
stamp at or before the newest odometry stamp (the history must end exactly at t0; nothing is
extrapolated); a lag larger than ``max_pose_age_s`` is reported as ``stale_odometry`` instead.

Threading: producers (image/odometry callbacks) call ``add_*`` from any thread; one worker calls
``plan``. The buffers have their own locks; image preprocessing runs outside any lock.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .action_space import ActionSpaceConfig, Normalization, action_to_traj, denormalize_action, estimate_v0
from .backend import AnswerOutput, BackendIdentity, SamplingRequest, TrajectoryBackend
from .egomotion import EgoHistory, HistoryUnavailable, PoseBuffer, PoseRejected, Reason
from .frames import MAX_LOOKAHEAD_S, FrameSelectionConfig, FrameSelectionError, FrameStore, TickSelection
from .gates import GateResult, InputGateConfig, OutputGateConfig, check_input, check_output
from .geometry import yaw_from_rotmat
from .history_tokens import HistoryTokenizerConfig, history_token_ids
from .image_preprocess import ExactResizer, preprocess_frame
from .model_config import ModelInputConfig, load_model_dir_config
from .model_inputs import build_model_inputs, build_question_inputs
from .tokenizer import AlpamayoTokenizer

__all__ = ["NORMALIZATION_CHOICES", "PlanResult", "Planner", "PlannerConfig", "TickNotReady", "build_planner",
           "choose_normalization", "consensus_scores"]

log = logging.getLogger(__name__)
NS = 1_000_000_000
SEED_POLICIES = ("fixed", "per_tick")
# auto: the backend's constants (its checkpoint's action_space buffers, or what its export recorded),
# else config.json bf16-rounded; config_bf16 / config: config.json rounded as the release stores it / nominal.
NORMALIZATION_CHOICES = ("auto", "config_bf16", "config")
# A backwards odometry stamp within this window is a reordered message (dropped), beyond it a
# time jump (clock reset, bag loop) that the caller answers with reset().
_OUT_OF_ORDER_WINDOW_S = 0.2


class TickNotReady(RuntimeError):
    """No tick can be formed now. ``code`` is machine-readable, the message says what is missing."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message
        self.details = dict(details or {})


@dataclass(frozen=True)
class PlannerConfig:
    camera_ids: tuple[int, ...] = (0, 1, 2, 6)  # model camera ids, in model order
    sampling: SamplingRequest = field(default_factory=SamplingRequest)
    seed_policy: str = "per_tick"  # "fixed": the same seed every tick; "per_tick": derived from t0
    frame_tolerance_s: float = 0.05  # a frame may be at most this much older than its slot time
    frame_lookahead_s: float = 0.002  # a frame this far after its slot time counts as at it (0 = reference)
    max_camera_skew_s: float = 0.1  # spread of one slot's frames across cameras
    max_pose_age_s: float = 0.1  # how far odometry may lag the cameras' t0
    gates_enabled: bool = True
    normalization_constants: str = "auto"  # where the action de-normalisation comes from (NORMALIZATION_CHOICES)
    consensus_scale_m: float = 2.0  # distance scale of the consensus score (see consensus_scores)
    max_odometry_gap_s: float = 0.3
    input_gate: InputGateConfig = field(default_factory=InputGateConfig)
    output_gate: OutputGateConfig = field(default_factory=OutputGateConfig)

    def __post_init__(self) -> None:
        if self.seed_policy not in SEED_POLICIES:
            raise ValueError(f"seed_policy must be one of {SEED_POLICIES}, got {self.seed_policy!r}")
        if self.normalization_constants not in NORMALIZATION_CHOICES:
            raise ValueError(f"normalization_constants must be one of {NORMALIZATION_CHOICES}, "
                             f"got {self.normalization_constants!r}")
        if len(set(self.camera_ids)) != len(self.camera_ids) or not self.camera_ids:
            raise ValueError(f"camera_ids must be distinct and non-empty, got {self.camera_ids}")
        for name in ("frame_tolerance_s", "max_camera_skew_s", "max_pose_age_s", "consensus_scale_m",
                     "max_odometry_gap_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.frame_lookahead_s <= MAX_LOOKAHEAD_S:
            raise ValueError(f"frame_lookahead_s must be in [0, {MAX_LOOKAHEAD_S}] s, got {self.frame_lookahead_s}")


@dataclass
class PlanResult:
    t0: float  # input time (s); every output is stamped with it
    xyz: np.ndarray  # (K, N, 3) float32, ego frame at t0; waypoint i at t0 + (i+1)·dt
    rot: np.ndarray  # (K, N, 3, 3)
    yaw: np.ndarray  # (K, N)
    acceleration: np.ndarray  # (K, N) m/s², de-normalized model action
    curvature: np.ndarray  # (K, N) 1/m
    v0: float  # speed at t0 estimated from the history (spec §6.3)
    dt: float
    scores: np.ndarray  # (K,) in [0, 1], higher is better; 0 for a candidate that failed its gate
    selected: int
    reasoning: list[str]
    input_gate: GateResult
    output_gates: list[GateResult]  # one per candidate
    ok: bool  # input gate passed and the selected candidate passed its output gate
    backend: BackendIdentity
    timings_s: dict[str, float]
    t0_pose_world: tuple[np.ndarray, np.ndarray]  # ego pose at t0 in the odometry frame: (p (3,), R (3,3))
    seed: int = 0
    history: EgoHistory | None = None
    counters: dict[str, int] = field(default_factory=dict)
    gates_enabled: bool = True
    route_instruction: str = ""  # the navigation instruction the prompt carried ("" none)
    nav_guidance_weight: float = 0.0  # the navigation guidance weight the expert applied (0: none)

    @property
    def num_candidates(self) -> int:
        return int(self.xyz.shape[0])

    @property
    def rejection(self) -> tuple[str, list[str]] | None:
        """(gate, reason codes) when the gates reject this plan, else None.

        A plan is rejected when its input gate failed or no candidate passed its output gate
        (``selected`` is then a failing candidate); never with the gates disabled.
        """
        if not self.gates_enabled:
            return None
        if not self.input_gate.ok:
            return "input_gate", list(self.input_gate.reasons)
        if not self.output_gates[self.selected].ok:
            return "output_gate", list(self.output_gates[self.selected].reasons)
        return None

    @property
    def drive_index(self) -> int | None:
        """The candidate to drive, or None when the plan is rejected and the caller falls back."""
        return None if self.rejection is not None else self.selected


def consensus_scores(xyz: np.ndarray, candidate_ok: np.ndarray, scale_m: float) -> np.ndarray:
    """Score each candidate by its agreement with the others: exp(−mean xy ADE to the rest / scale).

    The K candidates are samples of the model's trajectory distribution; the one closest to all
    others (the medoid) approximates its mode and is the least likely to be an outlier sample, so
    it is the one to drive. A candidate that failed its output gate scores 0 and is not counted
    as support for the others.
    """
    k = xyz.shape[0]
    ok = np.asarray(candidate_ok, dtype=bool)
    if k == 1:
        return ok.astype(np.float32)
    diff = xyz[:, None, :, :2] - xyz[None, :, :, :2]
    ade = np.linalg.norm(diff, axis=-1).mean(axis=-1)  # (K, K) pairwise xy ADE
    support = ok[None, :] & ~np.eye(k, dtype=bool)
    n = support.sum(axis=1)
    mean = np.where(n > 0, (ade * support).sum(axis=1) / np.maximum(n, 1), 0.0)
    return np.where(ok, np.exp(-mean / scale_m), 0.0).astype(np.float32)


class Planner:
    """Buffers inputs and runs one tick on demand. See the module docstring."""

    def __init__(self, backend: TrajectoryBackend, tokenizer: AlpamayoTokenizer, inputs: ModelInputConfig,
                 action_space: ActionSpaceConfig, history_tokens: HistoryTokenizerConfig,
                 config: PlannerConfig, normalization: Normalization | None = None,
                 exact_resizer: ExactResizer | None = None) -> None:
        try:
            inputs = replace(inputs, inputs=inputs.inputs.with_cameras(config.camera_ids))
        except ValueError as exc:
            raise ValueError(f"the configured cameras {list(config.camera_ids)} do not fit the model: {exc}") from exc
        self.backend = backend
        self.exact_resizer = exact_resizer  # None: core's NumPy kernel (runtime.image_resize has torch's)
        self.tokenizer = tokenizer
        self.inputs = inputs
        self.variant = inputs.inputs.variant
        # the constants every trajectory is de-normalised with, and their source (diagnostics)
        self.normalization = normalization or action_space.normalization("explicit")
        self.action_space = action_space.with_normalization(self.normalization)
        self.history_tokens = history_tokens
        self.config = config
        self.frames = FrameStore(inputs.inputs, FrameSelectionConfig(
            slot_tolerance_s=config.frame_tolerance_s, max_skew_s=config.max_camera_skew_s,
            lookahead_s=config.frame_lookahead_s))
        # Keep enough odometry for the 1.5 s history plus replay scoring look-ups. A jump that stays
        # (relocalisation) restarts the history; the input gate's continuity limits decide what a jump is.
        self.poses = PoseBuffer(max_duration_s=10.0, max_gap_s=config.max_odometry_gap_s,
                                continuity=config.input_gate.continuity)
        self._frames_lock = threading.Lock()
        self.counters: dict[str, int] = {"frames_added": 0, "poses_added": 0, "ticks": 0, "resets": 0}
        self.last_selection: TickSelection | None = None  # the frames of the newest tick (questions)

    # ------------------------------------------------------------------ inputs
    def add_image(self, camera_id: int, stamp_s: float, rgb: np.ndarray) -> None:
        """Preprocess one camera frame (smart resize, once) and buffer it for the ticks that use it."""
        if camera_id not in self.config.camera_ids:
            raise ValueError(f"camera id {camera_id} is not one of the model's cameras {list(self.config.camera_ids)}")
        if not np.isfinite(stamp_s):
            raise ValueError(f"image stamp must be finite, got {stamp_s}")
        frame = preprocess_frame(rgb, camera_id, round(stamp_s * NS), self.inputs.processor,
                                 exact_resizer=self.exact_resizer)
        with self._frames_lock:
            self.frames.add(frame)
            self.counters["frames_added"] += 1

    def add_odometry(self, stamp_s: float, position: ArrayLike, orientation_xyzw: ArrayLike,
                     linear_velocity: ArrayLike | None = None) -> None:
        """Buffer one odometry pose (odometry frame; twist in the body frame).

        Raises PoseRejected: non-finite or non-unit input, a reordered message (``odometry_out_of_order``),
        or a time jump backwards (reason ``time_jump``) that the caller answers with ``reset()``.
        """
        latest = self.poses.latest_stamp
        if latest is not None and latest - _OUT_OF_ORDER_WINDOW_S <= stamp_s < latest:
            raise PoseRejected("odometry_out_of_order", f"odometry stamp {stamp_s:.3f} is {latest - stamp_s:.3f} s "
                               f"older than the newest {latest:.3f}; dropped", {"stamp": stamp_s})
        if self.poses.add(stamp_s, position, orientation_xyzw, linear_velocity):
            self.counters["poses_added"] += 1

    def reset(self) -> None:
        """Drop every buffered frame and pose (time jumped backwards: bag loop, clock reset)."""
        with self._frames_lock:
            self.frames.clear()
            self.last_selection = None
        self.poses.reset()
        self.counters["resets"] += 1

    # ------------------------------------------------------------------ tick
    def latest_ready_t0(self) -> float | None:
        """The newest t0 (s) at which a complete tick can be formed, or None."""
        try:
            return self._choose_t0_ns() / NS
        except TickNotReady:
            return None

    def _choose_t0_ns(self) -> int:
        odom = self.poses.latest_stamp
        if odom is None:
            raise TickNotReady(Reason.BUFFER_EMPTY, "no odometry received yet")
        with self._frames_lock:
            silent = [c for c, buf in self.frames.buffers.items() if not len(buf)]
            if silent:
                raise TickNotReady("no_frames", "no frames buffered from " + ", ".join(f"camera {c}" for c in silent)
                                   + " (silent camera or wrong topic?)", {"camera_ids": silent})
            cam_t0 = self.frames.latest_common_t0()
            if cam_t0 is None:
                try:
                    self.frames.select_latest()
                except FrameSelectionError as exc:
                    raise TickNotReady(exc.code, str(exc)) from exc
                raise TickNotReady("no_common_t0", "no time at which every camera fills every slot")
            odom_ns = round(odom * NS)
            if cam_t0 <= odom_ns:
                return cam_t0
            lag = (cam_t0 - odom_ns) / NS
            if lag > self.config.max_pose_age_s:
                raise TickNotReady("stale_odometry", f"odometry ends {lag * 1e3:.0f} ms before the cameras' "
                                   f"newest common time (limit {self.config.max_pose_age_s * 1e3:.0f} ms)",
                                   {"lag_s": lag})
            t0 = self.frames.latest_common_t0(not_after_ns=odom_ns)
            if t0 is None:
                raise TickNotReady("no_common_t0", f"no camera stamp at or before the newest odometry ({odom:.3f} s) "
                                   "at which every camera fills every slot", {"lag_s": lag})
            return t0

    def plan(self, t0: float | None = None, route: str | None = None) -> PlanResult:
        """Run one tick at t0 (default: ``latest_ready_t0()``). Raises TickNotReady.

        ``route``: the navigation instruction in effect (Alpamayo 1.5; checked text, see core.navigation).
        """
        if route is not None and not self.variant.route:
            raise ValueError(f"{self.variant.display_name} takes no route instruction")
        clock = _Stopwatch()
        t0_ns = self._choose_t0_ns() if t0 is None else round(t0 * NS)
        with self._frames_lock:
            try:
                selection = self.frames.select_tick(t0_ns)
            except FrameSelectionError as exc:
                raise TickNotReady(exc.code, str(exc), {"camera_id": exc.camera_id, "slot": exc.slot}) from exc
        try:
            history = self.poses.history(t0_ns / NS)
        except HistoryUnavailable as exc:
            raise TickNotReady(exc.reason_code, exc.message, exc.details) from exc
        clock.lap("select")

        hist_xyz, hist_rot = history.model_inputs()
        hist_xyz, hist_rot = hist_xyz[0, 0], hist_rot[0, 0]
        input_gate = check_input(history, cfg=self.config.input_gate)
        ids = history_token_ids(hist_xyz, self.history_tokens)
        guided = route is not None and self.config.sampling.nav_guidance_weight > 0.0
        inputs = build_model_inputs(selection, ids, self.tokenizer, self.inputs, route_text=route, unguided=guided)
        clock.lap("inputs")

        seed = self._seed_for(t0_ns)
        request = replace(self.config.sampling, seed=seed)
        if not guided and request.nav_guidance_weight:  # nothing to guide by without an instruction
            request = replace(request, nav_guidance_weight=0.0)
        out = self.backend.infer(inputs, request)
        with self._frames_lock:
            self.last_selection = selection
        clock.lap("backend")

        actions = np.asarray(out.actions, dtype=np.float32)
        v0 = float(estimate_v0(hist_xyz, hist_rot, self.action_space))
        xyz, rot = action_to_traj(actions, hist_xyz, hist_rot, self.action_space, v0=v0)
        accel, kappa = denormalize_action(actions, self.action_space)
        output_gates = self._output_gates(xyz, rot, accel, kappa, v0)
        candidate_ok = np.array([g.ok for g in output_gates]) if self.config.gates_enabled else np.ones(len(xyz), bool)
        scores = consensus_scores(xyz, candidate_ok, self.config.consensus_scale_m)
        selected = int(np.argmax(scores)) if candidate_ok.any() else 0
        clock.lap("rollout")

        ok = (input_gate.ok and bool(candidate_ok[selected])) if self.config.gates_enabled else True
        self.counters["ticks"] += 1
        timings = {**clock.laps, "total": clock.total(),
                   **{f"backend.{k}": float(v) for k, v in out.timings_s.items()}}
        return PlanResult(
            t0=t0_ns / NS, xyz=xyz.astype(np.float32), rot=rot.astype(np.float32),
            yaw=yaw_from_rotmat(rot).astype(np.float32), acceleration=accel.astype(np.float32),
            curvature=kappa.astype(np.float32), v0=v0, dt=self.action_space.dt, scores=scores,
            selected=selected, reasoning=list(out.reasoning), input_gate=input_gate, output_gates=output_gates,
            ok=ok, backend=self.backend.identity, timings_s=timings,
            t0_pose_world=(history.origin.position.copy(), history.origin.rot.copy()), seed=seed,
            history=history, counters=dict(out.counters), gates_enabled=self.config.gates_enabled,
            route_instruction=route or "", nav_guidance_weight=float(out.nav_guidance_weight))

    # ------------------------------------------------------------------ questions
    @property
    def answers_questions(self) -> bool:
        """The model has a question prompt and the backend a language model to answer it."""
        return self.variant.questions and callable(getattr(self.backend, "answer", None))

    def answer(self, question: str, max_new_tokens: int, cancelled: Any = None) -> tuple[AnswerOutput, float]:
        """Answer ``question`` (checked text) over the newest tick's frames; returns (answer, that tick's t0).

        Raises TickNotReady("no_tick") before the first tick, ValueError when the model or backend
        cannot answer. Call it from the thread that runs ``plan`` (one model, one tick at a time).
        """
        if not self.answers_questions:
            raise ValueError(f"{self.variant.display_name} on backend '{self.backend.identity.name}' cannot answer "
                             "questions (Alpamayo 1.5 on a backend with a language model can)")
        with self._frames_lock:
            selection = self.last_selection
        if selection is None:
            raise TickNotReady("no_tick", "no tick has run yet: a question is asked about the newest tick's frames")
        inputs = build_question_inputs(selection, question, self.tokenizer, self.inputs)
        request = replace(self.config.sampling, seed=self._seed_for(selection.t0_ns))
        out = self.backend.answer(inputs, request, max_new_tokens, cancelled)  # type: ignore[attr-defined]
        return out, selection.t0_ns / NS

    def _output_gates(self, xyz: np.ndarray, rot: np.ndarray, accel: np.ndarray, kappa: np.ndarray,
                      v0: float) -> list[GateResult]:
        controls = np.stack([accel, kappa], axis=-1)
        return [check_output(xyz[k], controls[k], v0, rot=rot[k], cfg=self.config.output_gate,
                             action_cfg=self.action_space) for k in range(xyz.shape[0])]

    def _seed_for(self, t0_ns: int) -> int:
        base = self.config.sampling.seed
        if self.config.seed_policy == "fixed":
            return base
        # Derived from (seed, t0) only, so a replay and the live node draw the same samples at a t0.
        digest = hashlib.blake2b(f"{base}:{t0_ns}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") >> 1


class _Stopwatch:
    def __init__(self) -> None:
        self._start = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self._last
        self._last = now

    def total(self) -> float:
        return time.perf_counter() - self._start


def build_planner(backend: TrajectoryBackend, model_dir: str | Path, config: PlannerConfig,
                  exact_resizer: ExactResizer | None = None) -> Planner:
    """A Planner for the model in ``model_dir`` (config.json + tokenizer.json, as released).

    ``exact_resizer``: the bit-exact image resize to use (default core's NumPy kernel; the ROS node and
    the tools pass ``alpamayo_ros.runtime.image_resize.exact_resizer()``, torch's kernel when installed).
    """
    model_dir = Path(model_dir)
    cfg = load_model_dir_config(model_dir)
    tokenizer = load_model_tokenizer(model_dir, cfg)
    inputs = ModelInputConfig.from_config(cfg)
    if inputs.layout != tokenizer.layout:
        raise ValueError(f"{model_dir}: the token ids in config.json disagree with tokenizer.json "
                         f"(config: {inputs.layout}, tokenizer: {tokenizer.layout}); re-run prepare-tokenizer")
    action_space = ActionSpaceConfig.from_model_config(cfg)
    normalization = choose_normalization(backend.identity, action_space, config.normalization_constants)
    history_tokens = HistoryTokenizerConfig.from_model_config(cfg)
    return Planner(backend, tokenizer, inputs, action_space, history_tokens, config, normalization,
                   exact_resizer)


def choose_normalization(identity: BackendIdentity, nominal: ActionSpaceConfig, choice: str) -> Normalization:
    """The de-normalisation constants of ``choice`` (PlannerConfig.normalization_constants).

    auto is the reference's behaviour: the checkpoint's ``action_space.*`` buffers, which the backend
    reports (read from its weights, or recorded in its ONNX / engine manifest at export); a backend that
    reports none gets config.json rounded to bf16, as the released checkpoint stores the values.
    """
    if choice == "config":
        return nominal.normalization("config")
    if choice == "auto" and identity.normalization is not None:
        return identity.normalization
    return nominal.bf16_rounded().normalization("config_bf16")


def load_model_tokenizer(model_dir: Path, cfg: dict[str, Any]) -> AlpamayoTokenizer:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a model directory needs the Alpamayo-extended tokenizer "
                                "(make one with `alpamayo-ros prepare-tokenizer BASE_DIR OUT_DIR`)")
    traj_vocab = int(cfg.get("traj_vocab_size", 4000))
    future_bins = int((cfg.get("traj_tokenizer_cfg") or {}).get("num_bins", 3000))
    return AlpamayoTokenizer.from_file(path, traj_vocab_size=traj_vocab, future_bins=future_bins)
