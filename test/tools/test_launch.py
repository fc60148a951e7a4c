"""launch/planner.launch.py and launch/replay.launch.py.

launch/launch_ros are not installable on the development machines (feasibility §5), so the
structure is checked on the file's AST here; where launch_ros is importable (a ROS machine, CI
with ROS) the files are also loaded for real: arguments declared into a LaunchContext, the node
action built and its parameters/command expanded, and the lifecycle event wiring inspected.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLANNER_LAUNCH = ROOT / "launch" / "planner.launch.py"
REPLAY_LAUNCH = ROOT / "launch" / "replay.launch.py"

EXPECTED_ARGS = {
    "namespace", "params_file", "use_sim_time", "autostart", "log_level", "backend", "model_dir", "engine_dir",
    "cross_left_topic", "front_wide_topic", "cross_right_topic", "front_tele_topic", "odom_topic",
}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if fname == name:
                out.append(node)
    return out


def _constants(tree: ast.Module) -> dict[str, object]:
    """Module-level NAME = <literal> assignments."""
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _value(expr: ast.expr | None, consts: dict[str, object]) -> object:
    if isinstance(expr, ast.Constant):
        return expr.value
    if isinstance(expr, ast.Name):
        return consts.get(expr.id)
    return None


def _declared_args(tree: ast.Module) -> set[str]:
    consts = _constants(tree)
    names = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")
             if c.args and isinstance(c.args[0], ast.Constant)}
    # Camera topic arguments are declared in a loop over CAMERA_TOPIC_ARGS.
    if any(isinstance(c.args[0], ast.Name) for c in _calls(tree, "DeclareLaunchArgument") if c.args):
        names |= set(consts.get("CAMERA_TOPIC_ARGS", {}))
    return names


def test_planner_launch_declares_the_expected_arguments() -> None:
    declared = _declared_args(_tree(PLANNER_LAUNCH))
    missing = EXPECTED_ARGS - declared
    assert not missing, f"planner.launch.py does not declare {sorted(missing)}"
    # Every declared argument has a description (Nav2 bringup hygiene).
    for call in _calls(_tree(PLANNER_LAUNCH), "DeclareLaunchArgument"):
        assert _kw(call, "description") is not None, ast.unparse(call)[:80]


def test_planner_launch_starts_a_lifecycle_node_of_this_package_with_the_params_file() -> None:
    tree = _tree(PLANNER_LAUNCH)
    consts = _constants(tree)
    nodes = _calls(tree, "LifecycleNode")
    assert len(nodes) == 1
    node = nodes[0]
    assert _value(_kw(node, "package"), consts) == "alpamayo_ros"
    assert _value(_kw(node, "executable"), consts) == "alpamayo_planner"
    assert _kw(node, "autostart") is None, "LifecycleNode(autostart=) exists only in new launch_ros releases"
    params = _kw(node, "parameters")
    assert isinstance(params, ast.List) and params.elts
    assert ast.unparse(params.elts[0]) == "params_file"
    # ... which is the params_file argument (rewritten for a namespace, see _namespaced_params_file)
    assign = next(n for n in ast.walk(tree) if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "params_file")
    assert "LaunchConfiguration('params_file').perform(context)" in ast.unparse(assign.value)
    # The default params file is the installed config/planner.yaml.
    default = next(c for c in _calls(tree, "DeclareLaunchArgument") if c.args[0].value == "params_file")  # type: ignore[union-attr]
    assert "'config', 'planner.yaml'" in ast.unparse(_kw(default, "default_value"))
    # The executable is installed by CMake and the package declares the launch dependencies.
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert "scripts/alpamayo_planner" in cmake and "install(DIRECTORY launch config" in cmake
    package_xml = (ROOT / "package.xml").read_text()
    for dep in ("launch", "launch_ros", "lifecycle_msgs"):
        assert re.search(rf"<(exec_)?depend>{dep}</(exec_)?depend>", package_xml), dep


def test_autostart_is_configure_then_activate_and_a_failure_fails_the_launch() -> None:
    tree = _tree(PLANNER_LAUNCH)
    src = PLANNER_LAUNCH.read_text()
    changes = [ast.unparse(_kw(c, "transition_id")) for c in _calls(tree, "ChangeState")]
    assert "Transition.TRANSITION_CONFIGURE" in changes and "Transition.TRANSITION_ACTIVATE" in changes
    handlers = {}
    for call in _calls(tree, "OnStateTransition"):
        key = (_value(_kw(call, "start_state"), {}), _value(_kw(call, "goal_state"), {}))
        handlers[key] = ast.unparse(_kw(call, "entities"))
    # activate only after a successful configure
    assert "TRANSITION_ACTIVATE" in handlers[("configuring", "inactive")]
    # failures: an action that fails the launch (exit code 1) with a message saying what failed
    for key in (("configuring", "unconfigured"), ("activating", "inactive"), (None, "errorprocessing")):
        assert handlers[key].startswith("[_failed("), key
    assert "configure FAILED" in handlers[("configuring", "unconfigured")]
    assert "activate FAILED" in handlers[("activating", "inactive")]
    # a planner process that exits (crash, failed --autostart) ends the launch too
    assert ast.unparse(_kw(_calls(tree, "LifecycleNode")[0], "on_exit")) == "_on_planner_exit"
    assert "FAILED" in src
    # every autostart action is conditional on the autostart argument
    for call in _calls(tree, "RegisterEventHandler") + [c for c in _calls(tree, "EmitEvent") if _kw(c, "condition")]:
        assert ast.unparse(_kw(call, "condition")) == "autostart"


def test_replay_launch_includes_the_planner_with_sim_time_and_a_player() -> None:
    tree = _tree(REPLAY_LAUNCH)
    declared = _declared_args(tree)
    assert {"bag", "params_file", "out", "player"} <= declared
    includes = ast.unparse(_calls(tree, "IncludeLaunchDescription")[0])
    assert "planner.launch.py" in includes and "'use_sim_time': 'true'" in includes
    assert _calls(tree, "ExecuteProcess"), "the replay launch starts a player process"


def _lift(path: Path, *names: str, **scope: object) -> dict:
    """Module-level functions of a launch file, run here without launch: `scope` supplies the
    names they use (stand-ins for launch classes where launch is not installable)."""
    fns = [n for n in _tree(path).body if isinstance(n, ast.FunctionDef) and n.name in names]
    assert {f.name for f in fns} == set(names)
    exec(compile(ast.Module(body=fns, type_ignores=[]), str(path), "exec"), scope)
    return scope


class _Exited:
    def __init__(self, returncode: int) -> None:
        self.returncode = returncode


class _Context:
    def __init__(self, is_shutdown: bool) -> None:
        self.is_shutdown = is_shutdown


def test_a_failed_planner_process_fails_the_launch_and_a_clean_exit_ends_it() -> None:
    shutdown = object()
    fns = _lift(PLANNER_LAUNCH, "_fail_launch", "_on_planner_exit", Shutdown=lambda reason: shutdown)
    on_exit = fns["_on_planner_exit"]
    for code in (1, -11):
        with pytest.raises(RuntimeError, match=f"exited with code {code}"):
            on_exit(_Exited(code), _Context(is_shutdown=False))
    with pytest.raises(RuntimeError):  # killed (SIGKILL escalation) while the launch shuts down
        on_exit(_Exited(-9), _Context(is_shutdown=True))
    assert on_exit(_Exited(0), _Context(is_shutdown=False)) == [shutdown]
    assert on_exit(_Exited(0), _Context(is_shutdown=True)) is None  # stopped by the launch itself


def test_a_failed_replay_player_fails_the_launch() -> None:
    fns = _lift(REPLAY_LAUNCH, "_after_player", EmitEvent=lambda event: ("emit", event),
                Shutdown=lambda reason: reason)
    with pytest.raises(RuntimeError, match="exited with code 2"):
        fns["_after_player"](_Exited(2), _Context(is_shutdown=False))
    assert fns["_after_player"](_Exited(0), _Context(is_shutdown=False)) == [("emit", "replay finished")]


def test_launch_files_compile() -> None:
    for path in (PLANNER_LAUNCH, REPLAY_LAUNCH):
        compile(path.read_text(), str(path), "exec")


# ----------------------------------------------------------------------------------------------
# Real launch API (skipped where launch_ros is not importable, as on the development machines).

def _real_launch():
    if importlib.util.find_spec("launch_ros") is None or importlib.util.find_spec("launch") is None:
        pytest.skip("launch_ros is not importable here (not on PyPI; see feasibility §5) — structural tests cover it")
    import launch

    if not hasattr(launch, "LaunchDescription"):
        pytest.skip("the `launch` module here is not ROS launch (PyPI `launch` is an unrelated project)")
    return launch


def _load(path: Path, context):
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    return PythonLaunchDescriptionSource(str(path)).get_launch_description(context)


def test_planner_launch_loads_with_the_real_launch_api(tmp_path: Path) -> None:
    launch = _real_launch()
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
    from launch_ros.actions import LifecycleNode

    context = launch.LaunchContext()
    ld = _load(PLANNER_LAUNCH, context)
    declared = {a.name for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    assert EXPECTED_ARGS <= declared
    params = tmp_path / "planner.yaml"
    params.write_text("alpamayo_planner:\n  ros__parameters:\n    backend: onnxruntime\n")
    # Given arguments first (as `ros2 launch ... name:=value` does); visiting the declarations
    # then fills in the defaults of the others.
    context.launch_configurations.update({
        "params_file": str(params), "backend": "kinematic", "front_wide_topic": "/cam/front",
        "use_sim_time": "true", "namespace": "veh1",
    })
    for action in ld.entities:
        if isinstance(action, DeclareLaunchArgument):
            action.visit(context)
    opaque = next(a for a in ld.entities if isinstance(a, OpaqueFunction))
    actions = opaque.visit(context)
    nodes = [a for a in actions if isinstance(a, LifecycleNode)]
    assert len(nodes) == 1
    node = nodes[0]
    assert node.node_package == "alpamayo_ros" and node.node_executable == "alpamayo_planner"
    node._perform_substitutions(context)
    expanded = node._Node__expanded_parameter_arguments
    # Under a namespace the node's section is re-keyed to its fully qualified name.
    assert expanded[0][1] is True
    assert "/veh1/alpamayo_planner:" in Path(expanded[0][0]).read_text()
    override_file = Path(expanded[1][0])
    text = override_file.read_text()
    assert "backend: kinematic" in text and "use_sim_time: true" in text
    assert "cameras.front_wide_120fov.topic: /cam/front" in text
    assert "model_dir" not in text, "empty launch arguments must keep the params file's values"
    assert node.expanded_node_namespace == "/veh1"
    handlers = [a.event_handler for a in actions if isinstance(a, RegisterEventHandler)]
    assert len(handlers) >= 4
    # Conditions: autostart false leaves the lifecycle to a manager.
    context.launch_configurations["autostart"] = "false"
    assert all(not a.condition.evaluate(context) for a in actions if isinstance(a, RegisterEventHandler))


def test_replay_launch_loads_with_the_real_launch_api() -> None:
    launch = _real_launch()
    from launch.actions import DeclareLaunchArgument

    context = launch.LaunchContext()
    ld = _load(REPLAY_LAUNCH, context)
    assert {"bag", "out"} <= {a.name for a in ld.entities if isinstance(a, DeclareLaunchArgument)}


def _installed_planner() -> None:
    """Skip unless `ros2 run alpamayo_ros alpamayo_planner` would work (a colcon install space)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    try:
        prefix = Path(get_package_prefix("alpamayo_ros"))
    except PackageNotFoundError:
        prefix = Path("/nonexistent")
    if not (prefix / "lib" / "alpamayo_ros" / "alpamayo_planner").is_file():
        pytest.skip("alpamayo_ros is not installed by colcon here (no lib/alpamayo_ros/alpamayo_planner)")


def _run_planner_launch(launch, extra_actions: list, **arguments: str) -> tuple[int, list[int]]:
    """Run planner.launch.py in a real LaunchService: its return code (what `ros2 launch` exits
    with) and the planner process's exit codes."""
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    exits: list[int] = []
    service = launch.LaunchService()
    service.include_launch_description(launch.LaunchDescription([
        RegisterEventHandler(OnProcessExit(on_exit=lambda event, context: exits.append(event.returncode))),
        *extra_actions,
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(PLANNER_LAUNCH)),
                                 launch_arguments=arguments.items()),
    ]))
    return service.run(), exits


def test_a_failed_configure_fails_the_real_launch(tmp_path: Path) -> None:
    launch = _real_launch()
    _installed_planner()
    code, exits = _run_planner_launch(launch, [], model_dir=str(tmp_path / "missing"))
    assert code == 1, "a failed configure must fail `ros2 launch`"
    assert exits == [0], "the planner itself was stopped cleanly by the failing launch"


def test_an_active_planner_stops_cleanly_when_the_real_launch_shuts_down() -> None:
    launch = _real_launch()
    _installed_planner()
    from launch.actions import RegisterEventHandler, Shutdown
    from launch_ros.event_handlers import OnStateTransition

    from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir

    stop_when_active = RegisterEventHandler(OnStateTransition(
        goal_state="active", entities=[Shutdown(reason="planner reached active")]))
    code, exits = _run_planner_launch(launch, [stop_when_active], backend="kinematic",
                                      model_dir=str(default_tiny_model_dir()))
    assert (code, exits) == (0, [0])


def test_params_file_is_rekeyed_for_a_namespace(tmp_path: Path) -> None:
    """_namespaced_params_file runs here: it is pure Python (yaml), lifted out of the launch file."""
    import tempfile

    import yaml

    rekey = _lift(PLANNER_LAUNCH, "_namespaced_params_file", yaml=yaml, tempfile=tempfile)["_namespaced_params_file"]
    src = tmp_path / "p.yaml"
    src.write_text("alpamayo_planner:\n  ros__parameters:\n    rate_hz: 5.0\nother:\n  ros__parameters: {a: 1}\n")
    assert rekey(str(src), "", "alpamayo_planner") == str(src)  # no namespace: the file as is
    out = yaml.safe_load(Path(rekey(str(src), "/veh1/", "alpamayo_planner")).read_text())
    assert out == {"/veh1/alpamayo_planner": {"ros__parameters": {"rate_hz": 5.0}}, "other": {"ros__parameters": {"a": 1}}}
    wild = tmp_path / "w.yaml"
    wild.write_text("/**/alpamayo_planner:\n  ros__parameters: {rate_hz: 5.0}\n")
    assert rekey(str(wild), "veh1", "alpamayo_planner") == str(wild)  # wildcards already match
