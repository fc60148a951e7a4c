"""`alpamayo-ros evaluate --ray` on a local Ray cluster that this module starts (2 CPUs, loopback
only, no dashboard, no usage statistics) and shares between its tests: the numbers of the local
executors on the kinematic backend and on the tiny model, and an actor lost mid-run."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
from pathlib import Path

import numpy as np
import pytest
from eval_helpers import kinematic_args, numbers, tiny_args
from test_evaluate import in_process, kinematic_spec  # noqa: F401 (the session's reference run)

from alpamayo_ros.tools.cli import main
from alpamayo_ros.tools.evaluate import run_bags
from alpamayo_ros.tools.executors import InProcessExecutor, RayExecutor, init_ray

if importlib.util.find_spec("ray") is None:  # not importorskip: init_ray sets Ray up before its import
    pytest.skip("ray is not installed (pip install 'alpamayo_ros[ray]')", allow_module_level=True)
psutil = pytest.importorskip("psutil")


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    ray = init_ray(num_cpus=2, temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield ray
    ray.shutdown()


def _is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    return addr.is_loopback or (addr.version == 6 and addr.ipv4_mapped is not None and addr.ipv4_mapped.is_loopback)


def test_local_ray_listens_and_talks_on_loopback_only(ray_cluster) -> None:
    assert {n["NodeManagerAddress"] for n in ray_cluster.nodes()} == {"127.0.0.1"}
    procs = psutil.Process().children(recursive=True)
    assert any("raylet" in p.name() for p in procs) and any("gcs_server" in p.name() for p in procs)
    sockets = [(p.name(), c) for p in procs for c in p.net_connections(kind="inet")]
    assert sockets  # the cluster's servers and their connections
    for name, c in sockets:
        assert _is_loopback(c.laddr.ip), f"{name} has a socket on {c.laddr}"
        assert not c.raddr or _is_loopback(c.raddr.ip), f"{name} talks to {c.raddr}"


def test_ray_gives_the_numbers_of_the_local_executors(ray_cluster, in_process: Path, eval_bags: list[Path],  # noqa: F811
                                                      tmp_path: Path) -> None:
    out = tmp_path / "ray"
    assert main(kinematic_args(eval_bags, out, "--ray", "--workers", "2")) == 1  # the corrupted bag fails
    assert numbers(out) == numbers(in_process)
    report_settings = json.loads((out / "report.json").read_text())["settings"]
    assert report_settings["executor"] == "ray" and report_settings["workers"] == 2
    assert ray_cluster.is_initialized()  # the test's cluster is left running for the next test


def test_ray_runs_the_tiny_model_like_this_process(ray_cluster, tiny_eval_bags: list[Path], tmp_path: Path) -> None:
    local, distributed = tmp_path / "local", tmp_path / "ray"
    assert main(tiny_args(tiny_eval_bags, local)) == 0
    assert main(tiny_args(tiny_eval_bags, distributed, "--ray", "--workers", "2")) == 0
    assert numbers(distributed) == numbers(local)
    report = json.loads((local / "report.json").read_text())
    assert report["settings"]["model_id"].startswith("tiny_model@") and report["settings"]["precision_run"] == "fp32"
    assert report["summary"]["ticks_scored"] == 4 and report["summary"]["status"] == {"planned": 4}


def test_a_ray_actor_lost_mid_run_loses_no_bag(ray_cluster, eval_bags: list[Path],
                                               caplog: pytest.LogCaptureFixture) -> None:
    spec = kinematic_spec()
    bags = eval_bags[:4]
    expected = {r.bag: r for r in run_bags(bags, InProcessExecutor(spec))}
    executor = RayExecutor(spec, workers=2)
    got, killed = {}, False
    try:
        for bag, outcome in executor.map_unordered(bags):
            got[bag] = outcome
            if not killed:
                ray_cluster.kill(executor._actors[0])
                killed = True
    finally:
        executor.close()
    assert set(got) == set(bags) and "its Ray actor died" in caplog.text
    for bag, want in expected.items():
        assert got[bag].status == "ok"
        assert all(np.array_equal(a.xyz, b.xyz) for a, b in zip(got[bag].records, want.records, strict=True))


def test_ray_actors_that_cannot_build_the_planner_are_retired(ray_cluster, eval_bags: list[Path],
                                                              tmp_path: Path) -> None:
    """onnxruntime on the committed tiny model (no ONNX export): no actor can build its planner;
    each is retired after its first bag, and every bag is reported as not run, nothing written."""
    out = tmp_path / "no_onnx"
    args = kinematic_args(eval_bags[:3], out, "--ray", "--workers", "2")
    args[args.index("kinematic")] = "onnxruntime"
    assert main(args) == 2
    runs = json.loads((out / "report.json").read_text())["runs"]
    assert [r["status"] for r in runs] == ["failed"] * 3 and not list((out / "results").glob("*.jsonl"))
    assert all("the worker could not build its planner: FileNotFoundError" in r["error"] for r in runs)
