"""Build the node's Planner from the node's parameters file, without ROS.

Offline replay must run the exact planner the node runs, so it reads the same params file
(config/planner.yaml), validates it with the node's own rules (ros.params.validate, pure Python)
and builds the Planner the way the node does at configure (PlannerNode._load).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from alpamayo_ros.tools.topics import NODE_NAME, CameraTopic


def package_file(relative: str) -> Path:
    """A file of the package source tree (`config/planner.yaml`, `msg/X.msg`): from the checkout
    (development, pip -e), else from the ament share directory (colcon/ROS install)."""
    here = Path(__file__).resolve().parents[2] / relative
    if here.exists():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        shared = Path(get_package_share_directory("alpamayo_ros")) / relative
        if shared.exists():
            return shared
    except Exception:  # no ament index (plain pip install): report the checkout path
        pass
    return here


DEFAULT_PARAMS_FILE = package_file("config/planner.yaml")


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_params_file(path: str | Path, node_name: str = NODE_NAME, namespace: str = "") -> dict[str, Any]:
    """Dotted parameter names -> values for one node, as rcl would apply the file.

    Sections are applied from generic to specific: `/**`, then `/**/<name>`, then `<name>` /
    `/<ns>/<name>`.
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    fq = "/" + "/".join(p for p in (namespace.strip("/"), node_name) if p)
    order = ["/**", f"/**/{node_name}", node_name, f"/{node_name}", fq]
    raw: dict[str, Any] = {}
    for key in dict.fromkeys(order):
        section = data.get(key)
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            raw.update(_flatten(section["ros__parameters"]))
    if not raw:
        raise ValueError(f"{path}: no ros__parameters for node {fq} (looked for {order})")
    return raw


def raw_params(params_file: str | Path | None = None, overrides: dict[str, Any] | None = None,
               node_name: str = NODE_NAME, namespace: str = "") -> dict[str, Any]:
    """Node defaults + params file + overrides, not validated (topics for bag checks)."""
    from alpamayo_ros.ros.params import default_raw

    raw = default_raw()
    raw.update(read_params_file(params_file or DEFAULT_PARAMS_FILE, node_name, namespace))
    raw.update(overrides or {})
    return raw


def node_params(params_file: str | Path | None = None, overrides: dict[str, Any] | None = None,
                node_name: str = NODE_NAME, namespace: str = "") -> Any:
    """NodeParams from defaults + params file + overrides, validated like the node's configure."""
    from alpamayo_ros.ros.params import validate

    return validate(raw_params(params_file, overrides, node_name, namespace))


def camera_topics(params: Any) -> tuple[CameraTopic, ...]:
    return tuple(CameraTopic(c.model_camera_id, c.topic, c.transport == "compressed") for c in params.cameras)


def backend_options(params: Any) -> dict[str, Any]:
    """create_backend options from node parameters, as PlannerNode._backend_options maps them
    (kept equal by test/tools/test_planner_setup.py)."""
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


def build_planner_from_params(params: Any) -> tuple[Any, Any]:
    """(backend, planner) exactly as PlannerNode._load builds them at configure."""
    from alpamayo_ros.core.backend import SamplingRequest
    from alpamayo_ros.core.planner import PlannerConfig, build_planner
    from alpamayo_ros.runtime import create_backend

    options = backend_options(params)
    sampling = SamplingRequest(
        num_candidates=params.num_candidates,
        num_diffusion_steps=params.num_diffusion_steps,
        shared_reasoning=params.reasoning_mode == "shared",
        seed=params.seed,
        temperature=params.temperature,
        top_p=params.top_p,
        max_generation_length=params.max_generation_length,
    )
    config = PlannerConfig(
        camera_ids=params.camera_ids,
        sampling=sampling,
        seed_policy=params.seed_policy,
        frame_tolerance_s=params.frame_tolerance_s,
        max_camera_skew_s=params.max_camera_skew_s,
        max_pose_age_s=params.max_pose_age_s,
        gates_enabled=params.gates_enabled,
    )
    backend = create_backend(params.backend, params.model_dir, **options)
    try:
        planner = build_planner(backend, params.model_dir, config)
    except Exception:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
        raise
    return backend, planner
