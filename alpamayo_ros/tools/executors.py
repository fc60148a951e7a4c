"""Where `evaluate` runs its BagWorkers (tools/evaluate.py): each executor streams every bag's
result back as the bag finishes (`map_unordered`), with one planner per worker, built once.

- `InProcessExecutor`: one worker in this process (the default, and what `replay` runs).
- `PoolExecutor` (`--workers N`): N worker processes (concurrent.futures, spawned, so no
  inherited CUDA or ONNX Runtime state); `--gpus 0,1` pins each worker to one GPU
  (CUDA_VISIBLE_DEVICES, round robin) before it builds its planner.
- `RayExecutor` (`--ray [ADDRESS]`): N Ray actors, each holding `num_gpus` (default 1 on a
  cluster with GPUs, so one actor per GPU) and `num_cpus`; without an address (and no
  RAY_ADDRESS) it starts a local Ray on loopback with no dashboard and no usage statistics.

A worker that dies (process crash, actor lost) loses the bag it held: the bag is tried once more
on a fresh worker, then reported as not run (evaluate.BagNotRun: listed as failed, not written,
so the next run tries it again). A worker that cannot build its planner reports every bag it is
given as not run, with the reason.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from alpamayo_ros.tools.evaluate import BagNotRun, BagWorker, EvalSpec, Outcome

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 2  # a bag whose worker dies is given to a fresh worker once more


class GuardedWorker:
    """A BagWorker that turns a planner it could not build into BagNotRun outcomes (the pool and
    Ray run this; in-process, a planner that cannot be built stops the command instead)."""

    def __init__(self, spec: EvalSpec) -> None:
        self.worker: BagWorker | None = None
        self.error = ""
        try:
            self.worker = BagWorker(spec)
        except Exception as exc:
            log.exception("the worker could not build its planner")
            self.error = f"the worker could not build its planner: {type(exc).__name__}: {exc}"

    def run(self, bag: str) -> Outcome:
        if self.worker is None:
            return BagNotRun(Path(bag), self.error, worker_failed=True)
        return self.worker(bag)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()


def _retry_or_give_up(bag: Path, why: str, attempts: Counter, queue: deque) -> BagNotRun | None:
    attempts[bag] += 1
    if attempts[bag] < MAX_ATTEMPTS:
        log.warning("%s: %s; trying it again on a fresh worker", bag.name, why)
        queue.appendleft(bag)
        return None
    return BagNotRun(bag, f"{why} ({attempts[bag]} attempts)")


# ----------------------------------------------------------------------------------------------


class InProcessExecutor:
    name = "in-process"
    workers = 1

    def __init__(self, spec: EvalSpec, tick_progress: Callable[[int, int], None] | None = None,
                 on_bag: Callable[[int, Path], None] | None = None) -> None:
        self.spec = spec
        self.tick_progress, self.on_bag = tick_progress, on_bag
        self._worker: BagWorker | None = None

    def map_unordered(self, bags: Sequence[Path]) -> Iterator[tuple[Path, Outcome]]:
        for i, bag in enumerate(bags):
            if self._worker is None:
                self._worker = BagWorker(self.spec)
            if self.on_bag is not None:
                self.on_bag(i, bag)
            yield bag, self._worker(bag, self.tick_progress)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None


# ----------------------------------------------------------------------------------------------
# Process pool: module-level functions, since spawned workers import them by name.

_POOL_WORKER: GuardedWorker | None = None


def _pool_init(spec: EvalSpec, slots: Any, gpus: Sequence[str]) -> None:
    global _POOL_WORKER
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
    _POOL_WORKER = GuardedWorker(spec)


def _pool_run(bag: str) -> Outcome:
    assert _POOL_WORKER is not None, "_pool_init did not run"
    return _POOL_WORKER.run(bag)


class PoolExecutor:
    name = "process-pool"

    def __init__(self, spec: EvalSpec, workers: int, gpus: Sequence[str] = ()) -> None:
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.spec, self.workers, self.gpus = spec, workers, list(gpus)

    def map_unordered(self, bags: Sequence[Path]) -> Iterator[tuple[Path, Outcome]]:
        queue, attempts = deque(bags), Counter[Path]()
        while queue:  # one pool per pass; a pass ends when the pool breaks (a worker died)
            yield from self._pass(queue, attempts)

    def _pass(self, queue: deque, attempts: Counter) -> Iterator[tuple[Path, Outcome]]:
        ctx = multiprocessing.get_context("spawn")
        slots = ctx.Queue()
        for i in range(self.workers):
            slots.put(i)
        pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_pool_init,
                                   initargs=(self.spec, slots, self.gpus))
        inflight: dict[Future, Path] = {}
        try:
            while queue or inflight:
                while queue and len(inflight) < self.workers:  # one bag per worker: few bags lost per crash
                    bag = queue.popleft()
                    inflight[pool.submit(_pool_run, str(bag))] = bag
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    bag = inflight.pop(fut)
                    try:
                        outcome = fut.result()
                    except Exception as exc:  # BrokenProcessPool: a worker died; the pool is unusable
                        broken = True
                        gave_up = _retry_or_give_up(bag, f"its worker process died ({type(exc).__name__})",
                                                    attempts, queue)
                        if gave_up is not None:
                            yield bag, gave_up
                        continue
                    if isinstance(outcome, BagNotRun) and outcome.worker_failed:
                        outcome = _retry_or_give_up(bag, outcome.reason, attempts, queue)
                    if outcome is not None:
                        yield bag, outcome
                if broken:
                    for bag in inflight.values():
                        gave_up = _retry_or_give_up(bag, "a worker process died while it ran", attempts, queue)
                        if gave_up is not None:
                            yield bag, gave_up
                    return
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        pass  # each pass shuts its pool down


# ----------------------------------------------------------------------------------------------


# Ray replaces a loopback node address by the machine's routable one, and its servers (GCS,
# raylet, workers) listen on the node address, unless Ray's single-machine mode is on. That mode's
# switch is this variable (named for macOS/Windows, where the mode is the default); Ray reads it
# when it is imported.
RAY_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def init_ray(address: str | None = None, num_cpus: int | None = None, temp_dir: str | None = None) -> Any:
    """Connect to a Ray cluster (ADDRESS, or RAY_ADDRESS), or start a local one that listens and
    connects on loopback only, with no dashboard; usage statistics are off unless
    RAY_USAGE_STATS_ENABLED says otherwise (`temp_dir`: its session files, default Ray's). Returns
    the ray module."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    local = not (address or os.environ.get("RAY_ADDRESS"))
    if local:
        if "ray" in sys.modules and sys.modules["ray"]._private.ray_constants.ENABLE_RAY_CLUSTER:
            raise RuntimeError(f"ray was imported before {RAY_SINGLE_MACHINE_ENV}=0 was set: a local Ray would listen "
                               "beyond loopback; set it in the environment, or start Ray through init_ray first")
        os.environ[RAY_SINGLE_MACHINE_ENV] = "0"
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"--ray needs Ray: pip install 'alpamayo_ros[ray]' ({exc})") from exc
    if not local:
        ray.init(address=address or None, log_to_driver=True)
        return ray
    ray.init(num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=True,
             _temp_dir=temp_dir)
    nodes = {n["NodeManagerAddress"] for n in ray.nodes()}
    if not nodes <= set(LOOPBACK):
        ray.shutdown()
        raise RuntimeError(f"the local Ray came up on {sorted(nodes)}, not loopback: refusing to use it")
    return ray


class RayExecutor:
    """One Ray actor per worker; bags go to whichever actor is free (pull), results come back as
    they finish. Uses the Ray session already initialised in this process if there is one; Ray
    and the actors start with the first bag (a run with nothing left to do starts nothing)."""

    name = "ray"

    def __init__(self, spec: EvalSpec, workers: int | None = None, address: str | None = None,
                 gpus_per_worker: float | None = None, cpus_per_worker: float = 1.0) -> None:
        try:
            import ray
        except ImportError as exc:
            raise ImportError(f"--ray needs Ray: pip install 'alpamayo_ros[ray]' ({exc})") from exc
        self.ray, self.spec, self.address = ray, spec, address
        self.workers: int | None = workers
        self.gpus_per_worker, self.cpus_per_worker = gpus_per_worker, cpus_per_worker
        self._owns_ray = False
        self._actors: list[Any] = []

    def _start(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            init_ray(self.address)
            self._owns_ray = True
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0.0))
        if self.gpus_per_worker is None:
            self.gpus_per_worker = 1.0 if gpus >= 1 else 0.0
        if self.workers is None:
            self.workers = int(gpus // self.gpus_per_worker) if self.gpus_per_worker else 1
        if self.workers < 1:
            raise ValueError(f"no Ray workers: {gpus} GPUs in the cluster, {self.gpus_per_worker} per worker")
        need_cpu, need_gpu = self.workers * self.cpus_per_worker, self.workers * self.gpus_per_worker
        if need_cpu > float(resources.get("CPU", 0.0)) or need_gpu > gpus:
            log.warning("%d workers need %.1f CPUs and %.1f GPUs; the cluster has %s: some actors wait for resources",
                        self.workers, need_cpu, need_gpu, resources)
        self._actor_class = ray.remote(GuardedWorker)
        self._actors = [self._new_actor() for _ in range(self.workers)]

    def _new_actor(self) -> Any:
        return self._actor_class.options(num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker).remote(self.spec)

    def map_unordered(self, bags: Sequence[Path]) -> Iterator[tuple[Path, Outcome]]:
        ray = self.ray
        from ray.exceptions import RayActorError

        if not bags:
            return
        if not self._actors:
            self._start()
        queue, attempts = deque(bags), Counter[Path]()
        idle = list(self._actors)
        inflight: dict[Any, tuple[Any, Path]] = {}
        while queue or inflight:
            while queue and idle:
                actor, bag = idle.pop(), queue.popleft()
                inflight[actor.run.remote(str(bag))] = (actor, bag)
            ready, _ = ray.wait(list(inflight), num_returns=1)
            for ref in ready:
                actor, bag = inflight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayActorError as exc:  # the actor (its process or node) is gone
                    self._replace(actor)
                    idle.append(self._actors[-1])
                    gave_up = _retry_or_give_up(bag, f"its Ray actor died ({type(exc).__name__})", attempts, queue)
                    if gave_up is not None:
                        yield bag, gave_up
                    continue
                except Exception as exc:  # the task raised although the worker catches: report, go on
                    outcome = BagNotRun(bag, f"{type(exc).__name__}: {exc}")
                if isinstance(outcome, BagNotRun) and outcome.worker_failed:  # retire it, the bag goes elsewhere
                    self._actors.remove(actor)
                    self.ray.kill(actor)
                    gave_up = _retry_or_give_up(bag, outcome.reason, attempts, queue)
                    if gave_up is not None:
                        yield bag, gave_up
                    if not self._actors:
                        while queue:
                            left = queue.popleft()
                            yield left, BagNotRun(left, f"no worker could build its planner ({outcome.reason})")
                    continue
                idle.append(actor)
                yield bag, outcome

    def _replace(self, actor: Any) -> None:
        self._actors.remove(actor)
        self.ray.kill(actor)
        self._actors.append(self._new_actor())

    def close(self) -> None:
        for actor in self._actors:  # its process goes, and with it the planner and the model
            try:
                self.ray.kill(actor)
            except Exception:  # already gone
                pass
        self._actors = []
        if self._owns_ray:
            self.ray.shutdown()


def make_executor(spec: EvalSpec, workers: int | None = None, ray_address: str | None = None, use_ray: bool = False,
                  gpus: Sequence[str] = (), gpus_per_worker: float | None = None, cpus_per_worker: float = 1.0,
                  **in_process: Any) -> Any:
    """The executor the command line asks for: Ray, a process pool (workers > 1) or this process."""
    if use_ray:
        return RayExecutor(spec, workers, ray_address, gpus_per_worker, cpus_per_worker)
    if workers and workers > 1:
        return PoolExecutor(spec, workers, gpus)
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[0]
    return InProcessExecutor(spec, **in_process)
