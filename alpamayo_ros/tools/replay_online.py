"""Online replay: play a bag over DDS into the running planner node and record its outputs.

The player publishes the bag's messages (serialized bytes straight from the bag, no decode) and
/clock; the node runs with use_sim_time. In lockstep mode each tick is one step of the shared
schedule (replay.replay_schedule): publish the messages up to the tick time, wait until every
subscriber has acknowledged them (RELIABLE), let the node's input threads settle, advance /clock
to the tick time — which fires the node's planning timer once — and wait for the plan before the
next step. Results then do not depend on inference speed, and equal the offline replay's.

Without lockstep the bag plays in real time (times `rate`) and the node plans at its own pace,
like `ros2 bag play --clock`: the numbers then include the effect of latency (late plans, drops).

The node is started as a subprocess (`python -m alpamayo_ros.ros.main --autostart`) with the
params file and overrides, or an already running node is used (`node="external"`, e.g. from
replay.launch.py). Outputs (~/candidates, ~/selected_path, ~/reasoning) go to an MCAP bag.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np

from alpamayo_ros.tools.bag_io import BagReadError, BagSource
from alpamayo_ros.tools.replay import (
    Feeder,
    ReplayOptions,
    ReplayResult,
    bag_meta,
    iter_steps,
    replay_schedule,
)
from alpamayo_ros.tools.scoring import GroundTruth, TickRecord
from alpamayo_ros.tools.topics import (
    CLOCK_TOPIC,
    NODE_NAME,
    OUTPUT_CANDIDATES,
    OUTPUT_REASONING,
    OUTPUT_SELECTED,
)

log = logging.getLogger(__name__)


@dataclass
class OnlineOptions:
    node: str = "subprocess"  # subprocess: start the node here | external: use a running node
    node_name: str = NODE_NAME
    namespace: str = ""
    params_file: Path | None = None
    param_overrides: dict[str, Any] = field(default_factory=dict)
    lockstep: bool = True
    rate: float = 1.0  # real-time factor without lockstep
    settle_s: float = 0.05  # after DDS acks: time for the node's decode threads to hand frames over
    startup_timeout_s: float = 120.0  # node start + configure (model load, warm-up) + activate
    first_plan_timeout_s: float = 120.0
    plan_timeout_s: float = 30.0
    record_dir: Path | None = None  # MCAP bag of the node's outputs
    log_path: Path | None = None  # the node subprocess's stdout/stderr

    @property
    def node_fqn(self) -> str:
        ns = self.namespace.strip("/")
        return f"/{ns}/{self.node_name}" if ns else f"/{self.node_name}"


def _msg_class(msgtype: str) -> Any:
    pkg, _, name = msgtype.split("/")
    return getattr(import_module(f"{pkg}.msg"), name)


def _ros_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list | tuple):
        return "[" + ",".join(_ros_value(x) for x in v) + "]"
    if isinstance(v, str):
        return v if v else "''"
    return repr(v)


def node_command(opts: OnlineOptions) -> list[str]:
    """The planner node command line (what `ros2 launch` would run, without launch)."""
    cmd = [sys.executable, "-m", "alpamayo_ros.ros.main", "--autostart", "--ros-args",
           "-r", f"__node:={opts.node_name}"]
    if opts.namespace.strip("/"):
        cmd += ["-r", f"__ns:=/{opts.namespace.strip('/')}"]
    if opts.params_file is not None:
        cmd += ["--params-file", str(opts.params_file)]
    overrides = {"use_sim_time": True} | dict(opts.param_overrides)
    for k, v in overrides.items():
        cmd += ["-p", f"{k}:={_ros_value(v)}"]
    return cmd


class _Player:
    """The rclpy side: publishers for the bag topics and /clock, subscribers on the node outputs."""

    def __init__(self, opts: OnlineOptions, topics: dict[str, str], latched: tuple[str, ...] = ()) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("alpamayo_replay_player", context=self.context)
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        # the route instruction: the node's subscription is transient local (a volatile writer would not match)
        latch = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pubs = {t: self.node.create_publisher(_msg_class(mt), t, latch if t in latched else reliable)
                     for t, mt in topics.items()}
        self.clock_pub = self.node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(depth=10))
        self.clock_cls = Clock
        self.outputs: queue.Queue[tuple[str, bytes, float]] = queue.Queue()
        base = opts.node_fqn
        self.output_types = {
            f"{base}/{OUTPUT_CANDIDATES}": "alpamayo_ros/msg/TrajectoryCandidates",
            f"{base}/{OUTPUT_SELECTED}": "nav_msgs/msg/Path",
            f"{base}/{OUTPUT_REASONING}": "std_msgs/msg/String",
        }
        self.subs = [
            self.node.create_subscription(_msg_class(mt), topic, self._callback(topic), reliable, raw=True)
            for topic, mt in self.output_types.items()
        ]
        self.candidates_topic = f"{base}/{OUTPUT_CANDIDATES}"
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self._spin, name="replay_player", daemon=True)
        self.thread.start()

    def _callback(self, topic: str) -> Callable[[bytes], None]:
        return lambda raw: self.outputs.put((topic, bytes(raw), time.perf_counter()))

    def _spin(self) -> None:
        try:
            while self.context.ok():
                self.executor.spin_once(timeout_sec=0.05)
        except Exception:  # context shut down while spinning
            pass

    def node_ready(self) -> bool:
        """The node is active: it subscribes to every input and publishes candidates."""
        return all(p.get_subscription_count() > 0 for p in self.pubs.values()) and (
            self.node.count_publishers(self.candidates_topic) > 0
        )

    def publish_clock(self, t_s: float) -> None:
        msg = self.clock_cls()
        ns = round(t_s * 1e9)
        msg.clock.sec, msg.clock.nanosec = ns // 1_000_000_000, ns % 1_000_000_000
        self.clock_pub.publish(msg)

    def close(self) -> None:
        import rclpy

        try:
            self.executor.shutdown(timeout_sec=1.0)
            self.node.destroy_node()
        finally:
            if self.context.ok():
                rclpy.shutdown(context=self.context)
            self.thread.join(timeout=2.0)


def decode_candidates(raw: bytes) -> Any:
    from rclpy.serialization import deserialize_message

    from alpamayo_ros.msg import TrajectoryCandidates

    return deserialize_message(raw, TrajectoryCandidates)


def record_from_candidates(tick_time: float, msg: Any, latency_s: float, gt: GroundTruth,
                           ego_frame_id: str = "base_link") -> TickRecord:
    """A TickRecord from a received TrajectoryCandidates (paths brought into the ego frame at t0)."""
    t0 = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
    if msg.fallback:
        return TickRecord(tick_time, "gate_rejected" if "gate" in msg.fallback_reason else "fallback", t0=t0,
                          gate_ok="gate" not in msg.fallback_reason, fallback=True, reason=msg.fallback_reason,
                          latency_s=latency_s)
    xyz = np.array([[[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in path.poses]
                    for path in msg.candidates], dtype=np.float64)
    if msg.header.frame_id != ego_frame_id:  # odometry-frame paths: re-express in the ego frame at t0
        from alpamayo_ros.core.egomotion import to_ego_frame

        origin = gt.poses.pose_at(t0)
        xyz, _ = to_ego_frame(xyz, None, origin.position, origin.rot)
    inference = msg.inference_time.sec + msg.inference_time.nanosec * 1e-9
    return TickRecord(
        tick_time=tick_time, status="planned", t0=t0, xyz=xyz.astype(np.float32),
        scores=np.asarray(msg.scores, dtype=np.float64), selected=int(msg.selected_index),
        latency_s=latency_s, timings_s={"backend": inference}, reasoning=list(msg.reasoning),
        route_instruction=msg.route_instruction,
    )


class _Recorder:
    def __init__(self, out: Path, output_types: dict[str, str]) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        from alpamayo_ros.tools.bag_io import typestore

        if out.exists():
            import shutil

            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        self.writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP)
        self.writer.open()
        ts = typestore()
        self.conns = {t: self.writer.add_connection(t, mt, typestore=ts) for t, mt in output_types.items()}
        self.count = 0

    def write(self, topic: str, raw: bytes, t_ns: int) -> None:
        self.writer.write(self.conns[topic], t_ns, raw)
        self.count += 1

    def close(self) -> None:
        self.writer.close()


def _die_with_parent() -> None:
    """Linux: the node gets SIGTERM if the player dies without stopping it (no orphaned nodes)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: stop() still ends the node on every normal exit path
        pass


class _NodeProcess:
    def __init__(self, opts: OnlineOptions) -> None:
        self.cmd = node_command(opts)
        self.log_path = opts.log_path
        out = open(opts.log_path, "w") if opts.log_path else subprocess.DEVNULL
        self._out = out
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=_die_with_parent)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 15) -> str:
        if self.log_path is None or not Path(self.log_path).exists():
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])

    def stop(self, nudge: Callable[[int], None] | None = None) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL. `nudge(i)` is called while waiting: a node on sim
        time whose clock has stopped may sleep in its executor's wait until a message wakes it."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                for i in range(100):
                    if nudge is not None:
                        nudge(i)
                    try:
                        self.proc.wait(timeout=0.1)
                        break
                    except subprocess.TimeoutExpired:
                        continue
                else:
                    raise subprocess.TimeoutExpired(self.cmd, 10)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if hasattr(self._out, "close"):
            self._out.close()
        return self.proc.returncode


class OnlineReplayError(RuntimeError):
    pass


# The node's timer runs at LOCKSTEP_RATE_HZ on sim time; each step's clock jump fires it once
# (rcl skips missed periods), and a re-trigger is one timer period of sim time.
LOCKSTEP_RATE_HZ = 50.0
RETRIGGER_STEP_S = 1.0 / LOCKSTEP_RATE_HZ
RETRIGGER_AFTER_S = 1.0
MAX_SETTLE_S = 1.0


def lockstep_overrides(params: Any) -> dict[str, Any]:
    """Node parameters for a lockstep replay (the player drives the timer through /clock).

    Input queues are made deep, so frames that arrive while a tick is being computed are queued,
    never replaced (KEEP_LAST); the wall-clock inference timeout is disabled because the player
    waits for every plan.
    """
    ov: dict[str, Any] = {"rate_hz": LOCKSTEP_RATE_HZ, "fallback.inference_timeout_s": 600.0, "odometry.depth": 1000}
    for cam in params.cameras:
        ov[f"cameras.{cam.name}.depth"] = 100
    return ov


def run_online(
    bag: str | Path,
    opts: ReplayOptions | None = None,
    online: OnlineOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
    ego_frame_id: str = "base_link",
    shadow: Any = None,
) -> ReplayResult:
    """Replay `bag` into the node. `shadow`: a core Planner built like the node's (any backend;
    it never plans) that predicts each tick's t0 in lockstep; without it, each step waits for any
    new plan up to the timeouts."""
    opts = opts or ReplayOptions()
    online = online or OnlineOptions()
    if opts.t0_offsets_s is not None and opts.t0_policy != "node":
        raise ValueError("online replay plans where the node does: protocol ticks need t0_policy='node' "
                         f"(got {opts.t0_policy!r}; 'exact' is offline only)")
    t_wall = time.perf_counter()
    source = BagSource(bag)
    info = source.info
    gt = GroundTruth()
    result = ReplayResult("online", Path(bag), [], gt)
    result.meta["lockstep"] = online.lockstep
    if info.start_ns is None or info.end_ns is None:
        result.error = f"bag {bag} holds no readable messages"
        return result
    schedule = replay_schedule(bag, info.start_ns / 1e9, info.end_ns / 1e9, opts)
    ticks = schedule.cuts
    result.meta.update(bag_meta(info, opts, schedule))
    topics = {t: info.topics[t].msgtype for t in opts.topics if t in info.topics and t != opts.segment_topic}
    player = _Player(online, topics, latched=(opts.route_topic,))
    node = _NodeProcess(online) if online.node == "subprocess" else None
    recorder = _Recorder(online.record_dir, player.output_types) if online.record_dir else None
    try:
        _wait_ready(player, node, online)
        # Start the node's clock just before the bag so its timer phase is deterministic.
        player.publish_clock(info.start_ns / 1e9)
        if online.lockstep:
            _lockstep(source, opts, ticks, gt, player, recorder, result, online, progress, ego_frame_id, shadow)
        else:
            _free_running(source, opts, ticks, gt, player, recorder, result, online, progress, ego_frame_id)
    except BagReadError as exc:
        result.error = str(exc)
        log.error("%s", exc)
    finally:
        if recorder is not None:
            recorder.close()
            result.meta["recorded_outputs"] = str(online.record_dir)
            result.meta["recorded_messages"] = recorder.count
        if node is not None:  # before the player goes: it keeps the node's sim clock moving meanwhile
            t_end = (ticks[-1] if ticks else info.start_ns / 1e9) + 1.0
            result.meta["node_exit_code"] = node.stop(nudge=lambda i: player.publish_clock(t_end + 0.1 * i))
            if online.log_path:
                result.meta["node_log"] = str(online.log_path)
        player.close()
    result.wall_s = time.perf_counter() - t_wall
    return result


def _wait_ready(player: _Player, node: _NodeProcess | None, online: OnlineOptions) -> None:
    deadline = time.monotonic() + online.startup_timeout_s
    while not player.node_ready():
        if node is not None and not node.alive():
            raise OnlineReplayError(
                f"the planner node exited with code {node.proc.returncode} before becoming active "
                f"(command: {' '.join(node.cmd)})\n{node.tail()}")
        if time.monotonic() > deadline:
            tail = node.tail() if node is not None else ""
            raise OnlineReplayError(
                f"the planner node {online.node_fqn} did not become active within {online.startup_timeout_s:.0f} s "
                f"(its input subscriptions and ~/candidates publisher never matched)\n{tail}")
        time.sleep(0.05)
    time.sleep(0.2)  # let the node's /clock subscription match too


def _drain(player: _Player, recorder: _Recorder | None, clock_ns: int, timeout: float) -> list[tuple[str, bytes, float]]:
    out = []
    try:
        item = player.outputs.get(timeout=timeout)
        while True:
            out.append(item)
            if recorder is not None:
                recorder.write(item[0], item[1], clock_ns)
            item = player.outputs.get_nowait()
    except queue.Empty:
        pass
    return out


def _publish_batch(player: _Player, batch: list) -> None:
    # No wait_for_all_acked: on Fast DDS it returns only at the writer's next heartbeat (~3 s).
    for msg in batch:
        pub = player.pubs.get(msg.topic)
        if pub is not None:
            pub.publish(msg.data)


def _sub_batches(batch: list, step_ns: int = 100_000_000) -> list[list]:
    """Split a step's messages into 0.1 s slices of bag time: the node's input queues are shallow
    (KEEP_LAST 2 for cameras), so a long step (the history before the first tick) must be fed in
    slices the node consumes one by one."""
    out: list[list] = []
    for msg in batch:
        if not out or msg.log_time_ns - out[-1][0].log_time_ns >= step_ns:
            out.append([])
        out[-1].append(msg)
    return out


def _expected_t0(shadow: Any) -> tuple[float | None, str]:
    """What the node's worker will find: the t0 it plans, or why it cannot plan."""
    t0 = shadow.latest_ready_t0()
    if t0 is not None:
        return t0, ""
    try:
        shadow.plan(None)  # not ready: raises TickNotReady with the reason, runs no backend
    except Exception as exc:
        return None, f"{getattr(exc, 'code', type(exc).__name__)}: {exc}"
    return None, "unknown"


def _lockstep(source, opts, ticks, gt, player, recorder, result, online, progress, ego_frame_id, shadow) -> None:
    """One tick per step: data (in slices, each acknowledged), settle, /clock, then the plan.

    A shadow planner (the core Planner fed the same messages, never planning) says which t0 the
    node will plan, or that it will not plan this step (not ready, or no new input), so the player
    waits for exactly that plan and never sits out a timeout on a tick the node skips.
    """
    feeder = Feeder(shadow, opts) if shadow is not None else None
    last_t0: float | None = None
    planned_any = False
    settle = online.settle_s
    for k, tick_time, batch in iter_steps(source, opts, ticks, gt):
        for part in _sub_batches(batch):
            _publish_batch(player, part)
            if feeder is not None:
                for msg in part:
                    feeder.feed(msg)
            time.sleep(settle / 5)
        time.sleep(settle)
        expected, why = _expected_t0(shadow) if shadow is not None else (None, "")
        t_req = time.perf_counter()
        player.publish_clock(tick_time)
        clock_ns = round(tick_time * 1e9)
        if shadow is not None and (expected is None or expected == last_t0):
            # The node will not plan now; it may publish a fallback (input timeout) — collect it.
            skipped = TickRecord(tick_time, "not_ready" if expected is None else "no_new_input",
                                 t0=expected, reason=why or "no_new_input")
            for topic, raw, t_rx in _drain(player, recorder, clock_ns, timeout=0.2):
                if topic == player.candidates_topic:
                    rec = record_from_candidates(tick_time, decode_candidates(raw), t_rx - t_req, gt, ego_frame_id)
                    if rec.fallback:
                        skipped.fallback, skipped.reason = True, f"{skipped.reason}; fallback {rec.reason}"
            result.records.append(skipped)
            if progress is not None:
                progress(k + 1, len(ticks))
            continue
        timeout = online.plan_timeout_s if planned_any else online.first_plan_timeout_s
        record = None
        deadline = t_req + timeout
        # Re-trigger budget: small clock steps that stay before the next tick's time. They make
        # the node plan again *with the same data* if it planned (or gave up) before the last
        # slice of this step reached it.
        clock = tick_time
        clock_limit = (ticks[k + 1] if k + 1 < len(ticks) else tick_time + opts.period_s) - RETRIGGER_STEP_S
        last_trigger = t_req
        seen: list[float] = []
        while record is None and time.perf_counter() < deadline:
            early = False
            for topic, raw, t_rx in _drain(player, recorder, clock_ns, timeout=0.1):
                if topic != player.candidates_topic:
                    continue
                rec = record_from_candidates(tick_time, decode_candidates(raw), t_rx - t_req, gt, ego_frame_id)
                assert rec.t0 is not None  # every received message carries its t0
                matches = abs(rec.t0 - expected) < 1e-6 if expected is not None else (rec.t0 != last_t0 or rec.fallback)
                if matches and record is None:
                    record = rec
                elif not matches:
                    early = True
                    seen.append(rec.t0)
            now = time.perf_counter()
            if record is None and (early or now - last_trigger > RETRIGGER_AFTER_S) and clock + RETRIGGER_STEP_S <= clock_limit:
                clock += RETRIGGER_STEP_S
                player.publish_clock(clock)
                last_trigger = now
            if record is None and online.node == "subprocess" and not player.node_ready():
                raise OnlineReplayError("the planner node stopped responding (no longer subscribed to the inputs)")
        if seen and settle < MAX_SETTLE_S:  # the node planned before the data was in: slow down
            settle = min(MAX_SETTLE_S, 2 * settle)
            log.info("node planned before all inputs arrived; settle time now %.2f s", settle)
        if record is None:
            record = TickRecord(tick_time, "timeout", t0=expected, reason=(
                f"timeout: no plan for t0={expected} within {timeout:.0f} s (other t0s received: {seen}; "
                f"clock re-triggered to {clock:.3f})"))
        else:
            planned_any = True
        last_t0 = record.t0 if record.t0 is not None else last_t0
        result.records.append(record)
        if progress is not None:
            progress(k + 1, len(ticks))
    _drain(player, recorder, round(ticks[-1] * 1e9) if ticks else 0, timeout=0.2)


def _free_running(source, opts, ticks, gt, player, recorder, result, online, progress, ego_frame_id) -> None:
    """Real-time playback (x rate), like `ros2 bag play --clock`: messages go out in 0.1 s slices
    at their bag time, /clock follows, and the node plans at its own pace. Each tick records the
    newest plan that arrived during its period, or a drop."""
    t_start = time.perf_counter()
    bag_start = (ticks[0] - opts.cut_margin_s - opts.period_s) if ticks else 0.0
    if source.info.start_ns is not None:
        bag_start = source.info.start_ns / 1e9

    def wait_until(bag_t: float) -> float:
        due = t_start + (bag_t - bag_start) / online.rate
        time.sleep(max(0.0, due - time.perf_counter()))
        return due

    last_t0: float | None = None
    for k, tick_time, batch in iter_steps(source, opts, ticks, gt):
        for part in _sub_batches(batch):
            t_part = part[-1].log_time_ns / 1e9
            wait_until(t_part)
            _publish_batch(player, part)
            player.publish_clock(t_part)
        due = wait_until(tick_time)
        player.publish_clock(tick_time)
        got = None
        for topic, raw, t_rx in _drain(player, recorder, round(tick_time * 1e9), timeout=0.0):
            if topic == player.candidates_topic:
                rec = record_from_candidates(tick_time, decode_candidates(raw), t_rx - due, gt, ego_frame_id)
                if rec.t0 != last_t0:
                    got, last_t0 = rec, rec.t0
        result.records.append(got or TickRecord(tick_time, "timeout", reason="no_plan_in_period"))
        if progress is not None:
            progress(k + 1, len(ticks))
