"""Package metadata and the layering rules of DESIGN.md §2, checked without colcon."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "alpamayo_ros"

# Python modules that come from ROS packages, and the package.xml entry that provides them.
ROS_MODULE_TO_PACKAGE = {
    "rclpy": "rclpy",
    "std_msgs": "std_msgs",
    "nav_msgs": "nav_msgs",
    "sensor_msgs": "sensor_msgs",
    "geometry_msgs": "geometry_msgs",
    "visualization_msgs": "visualization_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "lifecycle_msgs": "lifecycle_msgs",
    "builtin_interfaces": "builtin_interfaces",
    "rosgraph_msgs": "rosgraph_msgs",
    "rcl_interfaces": "rcl_interfaces",
    "launch": "launch",
    "launch_ros": "launch_ros",
    "ament_index_python": "ament_index_python",
}
FORBIDDEN_IN_CORE = {"rclpy", "torch", "onnxruntime", "onnx", "tensorrt", "cuda", "transformers"}
FORBIDDEN_IN_RUNTIME = {"rclpy"}


def imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def python_files(*dirs: Path) -> list[Path]:
    """Hand-written Python files (the rosidl-generated alpamayo_ros/msg is not ours)."""
    return sorted(p for d in dirs for p in d.rglob("*.py") if not p.is_relative_to(PKG / "msg"))


def test_package_xml_parses_and_is_format_3() -> None:
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(ROOT / "package.xml"))
    assert pkg.name == "alpamayo_ros"
    assert pkg.package_format == 3
    assert pkg.get_build_type() == "ament_cmake"
    assert "rosidl_interface_packages" in [g.name for g in pkg.member_of_groups]


def test_package_xml_names_every_ros_package_the_code_imports() -> None:
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(ROOT / "package.xml"))
    declared = {d.name for d in pkg.build_depends + pkg.exec_depends + pkg.buildtool_depends}
    declared |= {d.name for d in pkg.build_export_depends}
    used: set[str] = set()
    for path in python_files(PKG, ROOT / "launch"):
        used |= {ROS_MODULE_TO_PACKAGE[m] for m in imported_top_modules(path) if m in ROS_MODULE_TO_PACKAGE}
    assert {"rclpy", "launch_ros"} <= used, "expected the node (rclpy) and the launch file (launch_ros)"
    missing = sorted(used - declared)
    assert not missing, f"package.xml lacks <depend>/<exec_depend> for {missing}"


def test_interface_files_are_declared_in_cmake() -> None:
    cmake = (ROOT / "CMakeLists.txt").read_text()
    files = sorted((ROOT / "msg").glob("*.msg")) + sorted((ROOT / "srv").glob("*.srv"))
    assert any(f.suffix == ".srv" for f in files)
    for f in files:
        assert f'"{f.parent.name}/{f.name}"' in cmake, f"{f.name} is not in rosidl_generate_interfaces"


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [("core", FORBIDDEN_IN_CORE), ("runtime", FORBIDDEN_IN_RUNTIME)],
)
def test_layers_import_only_downwards(layer: str, forbidden: set[str]) -> None:
    offenders = []
    for path in python_files(PKG / layer):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            mods: list[str] = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module] if node.level == 0 else [f"alpamayo_ros.{node.module}"]
            for mod in mods:
                top = mod.split(".")[0]
                if top in forbidden:
                    offenders.append(f"{path.relative_to(ROOT)}: {mod}")
                if layer == "core" and mod.startswith(("alpamayo_ros.ros", "alpamayo_ros.runtime",
                                                        "alpamayo_ros.tools")):
                    offenders.append(f"{path.relative_to(ROOT)}: {mod}")
    assert not offenders, f"{layer}/ imports what DESIGN.md §2 forbids: {offenders}"


def test_core_imports_without_heavy_dependencies() -> None:
    """Importing the core in a fresh interpreter pulls in none of the heavy frameworks."""
    import subprocess
    import sys

    code = (
        "import sys, alpamayo_ros.core as c; "
        "heavy = sorted(m for m in ('torch','onnxruntime','tensorrt','rclpy','transformers') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "", f"importing alpamayo_ros.core loaded {out.stdout.strip()}"
