"""The package as a ROS 2 machine builds it: `colcon build` of the tracked files in a throwaway
workspace, then checks run from the sourced install space (`source install/setup.bash`).

The build venv (.venv/colcon, made by scripts/dev_setup.sh from requirements/colcon-build.txt)
stands in for the ROS 2 Kilted underlay plus the user's venv: colcon, the ament/rosidl/rclpy
wheels and the node's Python dependencies, and no alpamayo_ros. Every command runs that venv's
python3 with the install space's environment, from a directory outside the source tree, so
nothing can import the package from anywhere but the install space.

This is a stage of its own in scripts/run_tests.sh (pyproject's norecursedirs keeps it out of the
main pytest run): `.venv/bin/python -m pytest test/colcon`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "alpamayo_ros"
# The build venv sits beside the interpreter running the tests (.venv/colcon next to .venv).
COLCON_VENV = Path(sys.prefix) / "colcon"
# Environment that would leak the development setup into the build or the installed node: the
# wheels' bootstrapper re-execs every interpreter with its own venv's LD_LIBRARY_PATH unless
# _ROS_WHEELS_BOOTSTRAP_COMPLETE says it already did.
LEAKY_ENV = ("PYTHONPATH", "PYTHONHOME", "LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE", "VIRTUAL_ENV",
             "AMENT_PREFIX_PATH", "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH", "COLCON_HOME")


@dataclass
class Install:
    """A built workspace and the environment of its sourced install space."""

    workspace: Path
    env: dict[str, str]
    python_dir: str  # lib/pythonX.Y/site-packages, as the build venv's python names it

    @property
    def prefix(self) -> Path:
        return self.workspace / "install" / PACKAGE

    @property
    def share(self) -> Path:
        return self.prefix / "share" / PACKAGE

    @property
    def python_package(self) -> Path:
        return self.prefix / self.python_dir / PACKAGE

    def python(self, code: str, **kwargs) -> subprocess.CompletedProcess[str]:
        """Run `python3 -c code` as a user of the install space would (cwd outside the sources)."""
        proc = subprocess.run(["python3", "-c", code], env=self.env, cwd=self.workspace.parent,
                              capture_output=True, text=True, timeout=120, **kwargs)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc


def _tracked_files() -> list[str]:
    proc = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"the colcon stage copies the package's tracked files, and this is no git checkout: {proc.stderr}")
    return [f for f in proc.stdout.split("\0") if f and (ROOT / f).is_file()]


def _copy_package(dest: Path) -> None:
    """The tracked files (their working-tree content): what a clone of the commit holds, without
    the development setup's generated or cached files."""
    for rel in _tracked_files():
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)


def _underlay_env(workspace: Path) -> dict[str, str]:
    """The shell of a ROS user: the underlay (here the build venv) on PATH and the prefix paths."""
    if not (COLCON_VENV / "bin" / "colcon").is_file():
        pytest.fail(f"no colcon build venv at {COLCON_VENV}: run `make setup` (scripts/dev_setup.sh)")
    env = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and not Path(p).is_relative_to(sys.prefix)]
    env["PATH"] = os.pathsep.join([str(COLCON_VENV / "bin"), *path])
    env["AMENT_PREFIX_PATH"] = env["CMAKE_PREFIX_PATH"] = str(COLCON_VENV)
    env["COLCON_HOME"] = str(workspace / ".colcon")  # no user defaults or mixins
    return env


def _build(workspace: Path, *colcon_args: str) -> Install:
    env = _underlay_env(workspace)
    cmd = ["colcon", "build", "--packages-select", PACKAGE, *colcon_args]
    proc = subprocess.run(cmd, cwd=workspace, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        stderr_log = workspace / "log" / "latest_build" / PACKAGE / "stderr.log"
        detail = stderr_log.read_text()[-6000:] if stderr_log.is_file() else ""
        pytest.fail(f"`{' '.join(cmd)}` failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{detail}")
    sourced = subprocess.run(["bash", "-c", 'source install/setup.bash && env -0'], cwd=workspace, env=env,
                             capture_output=True, text=True, timeout=60, check=True)
    install_env = dict(line.split("=", 1) for line in sourced.stdout.split("\0") if "=" in line)
    python_dir = subprocess.run(
        ["python3", "-c", "import sys; print(f'lib/python{sys.version_info[0]}.{sys.version_info[1]}/site-packages')"],
        env=install_env, capture_output=True, text=True, check=True).stdout.strip()
    return Install(workspace, install_env, python_dir)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Install:
    """`colcon build` (copies) of the package as committed."""
    workspace = tmp_path_factory.mktemp("colcon_ws")
    _copy_package(workspace / "src" / PACKAGE)
    return _build(workspace)


@pytest.fixture(scope="module")
def symlinked(tmp_path_factory) -> Install:
    """`colcon build --symlink-install` of a development checkout: the tracked files plus what
    scripts/dev_setup.sh leaves in the source package (its own rosidl output, byte code). Those
    are planted as broken stand-ins, so the checks fail if the install picks any of them up."""
    workspace = tmp_path_factory.mktemp("colcon_symlink_ws")
    src = workspace / "src" / PACKAGE
    _copy_package(src)
    (src / PACKAGE / "msg").mkdir()
    (src / PACKAGE / "msg" / "__init__.py").write_text("raise ImportError('stale development copy of msg/')\n")
    (src / PACKAGE / "srv").mkdir()
    (src / PACKAGE / "srv" / "__init__.py").write_text("raise ImportError('stale development copy of srv/')\n")
    (src / PACKAGE / "alpamayo_ros_s__rosidl_typesupport_c.so").write_text("not a shared object\n")
    (src / PACKAGE / "__pycache__").mkdir()
    (src / PACKAGE / "__pycache__" / "stale.cpython-311.pyc").write_bytes(b"\0")
    return _build(workspace, "--symlink-install")


IMPORT_PATHS = """
import json, sys
from rclpy.serialization import deserialize_message, serialize_message
from alpamayo_ros.msg import CandidateControls, TrajectoryCandidates
from alpamayo_ros.srv import Ask
import alpamayo_ros, alpamayo_ros.msg, alpamayo_ros.ros.node, alpamayo_ros.ros.main, alpamayo_ros.tools.cli
msg = TrajectoryCandidates(scores=[0.5, 0.25], model_id='m', route_instruction='Turn left in 40m')
assert deserialize_message(serialize_message(msg), TrajectoryCandidates) == msg  # loads the type support
answer = Ask.Response(success=True, answer='a red light')
assert deserialize_message(serialize_message(answer), Ask.Response) == answer
modules = {n: m.__file__ for n, m in sys.modules.items()
           if n.split('.')[0] == 'alpamayo_ros' and getattr(m, '__file__', None)}
print(json.dumps({'prefix': sys.prefix, 'modules': modules}))
"""


def _imported_modules(install: Install) -> dict[str, str]:
    out = json.loads(install.python(IMPORT_PATHS).stdout)
    assert Path(out["prefix"]) == COLCON_VENV, "python3 of the sourced shell is not the build venv's"
    modules = out["modules"]
    for name in ("alpamayo_ros", "alpamayo_ros.msg", "alpamayo_ros.msg._trajectory_candidates", "alpamayo_ros.srv",
                 "alpamayo_ros.ros.node", "alpamayo_ros.tools.cli"):
        assert name in modules, f"{name} was not imported: {sorted(modules)}"
    assert any("rosidl_typesupport" in n for n in modules), f"no type support module loaded: {sorted(modules)}"
    return modules


def test_the_ament_index_knows_the_package(installed: Install) -> None:
    code = ("from ament_index_python.packages import get_package_prefix, get_package_share_directory as s; "
            f"print(get_package_prefix('{PACKAGE}')); print(s('{PACKAGE}'))")
    prefix, share = installed.python(code).stdout.split()
    assert Path(prefix) == installed.prefix and Path(share) == installed.share


def test_share_holds_launch_config_package_xml_and_the_interfaces(installed: Install) -> None:
    expected = [f for f in _tracked_files() if f.startswith(("launch/", "config/", "msg/", "srv/"))
                or f == "package.xml"]
    assert {"launch/planner.launch.py", "launch/replay.launch.py", "config/planner.yaml",
            "msg/TrajectoryCandidates.msg", "msg/CandidateControls.msg", "srv/Ask.srv"} <= set(expected)
    for rel in expected:
        installed_file = installed.share / rel
        assert installed_file.is_file(), f"share/{PACKAGE}/{rel} is not installed"
        assert installed_file.read_bytes() == (ROOT / rel).read_bytes(), rel


def test_the_executables_ros2_run_finds_start(installed: Install) -> None:
    """`ros2 run alpamayo_ros <tool>` runs lib/alpamayo_ros/<tool> (python3 from PATH)."""
    for tool, usage in (("alpamayo_planner", "--autostart"), ("alpamayo-ros", "make-demo-bag")):
        exe = installed.prefix / "lib" / PACKAGE / tool
        assert os.access(exe, os.X_OK), tool
        proc = subprocess.run([str(exe), "--help"], env=installed.env, cwd=installed.workspace.parent,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and usage in proc.stdout, proc.stdout + proc.stderr


def test_interfaces_and_node_import_from_the_install_space(installed: Install) -> None:
    for name, file in _imported_modules(installed).items():
        assert Path(file).is_relative_to(installed.python_package), f"{name} imported from {file}"
        assert not Path(file).is_symlink(), f"{name}: a plain build copies, {file} is a link"
    # Every hand-written module and the committed tiny model are installed beside the generated msg/.
    for rel in _tracked_files():
        if rel.startswith(f"{PACKAGE}/"):
            assert (installed.prefix / installed.python_dir / rel).is_file(), f"{rel} is not installed"


def test_the_installed_planner_reaches_active_and_publishes_selected_path(installed, ros_context,
                                                                         unique_name) -> None:
    from nav_msgs.msg import Path as PathMsg
    from planner_process import drive_topic_args, first_message

    prefix = f"/{unique_name}"
    tiny_model = installed.python_package / "resources" / "tiny_model"
    cmd = [str(installed.prefix / "lib" / PACKAGE / "alpamayo_planner"), "--autostart", "--ros-args",
           "--params-file", str(installed.share / "config" / "planner.yaml"), *drive_topic_args(prefix),
           "-p", "backend:=kinematic", "-p", f"model_dir:={tiny_model}"]
    run = first_message(cmd, "python3", prefix, PathMsg, f"{prefix}/alpamayo_planner/selected_path", ros_context,
                        timeout_s=60.0, env=installed.env, cwd=installed.workspace.parent)
    assert run.received, f"no ~/selected_path from the installed planner (rc={run.returncode}):\n{run.output[-3000:]}"
    assert run.received[0].poses and run.received[0].header.frame_id == "base_link"
    assert "backend=kinematic" in run.output and "active: planning at" in run.output, run.output[-3000:]
    assert run.returncode == 0, run.output[-3000:]


def test_a_symlink_install_links_the_sources_and_keeps_the_generated_interfaces(symlinked: Install) -> None:
    src = symlinked.workspace / "src" / PACKAGE / PACKAGE
    build = symlinked.workspace / "build" / PACKAGE
    modules = _imported_modules(symlinked)
    for name, file in modules.items():
        assert Path(file).is_relative_to(symlinked.python_package), f"{name} imported from {file}"
        target = Path(file).resolve()
        generated = name.startswith(("alpamayo_ros.msg", "alpamayo_ros.srv")) or "rosidl_typesupport" in name
        assert target.is_relative_to(build if generated else src), f"{name}: {file} -> {target}"
    assert not (symlinked.python_package / "__pycache__" / "stale.cpython-311.pyc").exists()
