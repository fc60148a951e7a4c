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


def build_planner_from_params(params: Any) -> tuple[Any, Any]:
    """(backend, planner) exactly as PlannerNode._load builds them at configure."""
    from alpamayo_ros.core.planner import build_planner
    from alpamayo_ros.ros.params import backend_options, planner_config
    from alpamayo_ros.runtime import create_backend
    from alpamayo_ros.runtime.image_resize import planner_resizer

    options = backend_options(params)
    config = planner_config(params)
    backend = create_backend(params.backend, params.model_dir, **options)
    try:
        planner = build_planner(backend, params.model_dir, config, exact_resizer=planner_resizer(params))
    except Exception:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
        raise
    return backend, planner
