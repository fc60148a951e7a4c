"""Bring up the Alpamayo planner as a managed (lifecycle) node.

    ros2 launch alpamayo_ros planner.launch.py
    ros2 launch alpamayo_ros planner.launch.py params_file:=/path/my_rig.yaml backend:=tensorrt \
        model_dir:=/models/alpamayo_r1 front_wide_topic:=/sensing/camera/front/image_raw/compressed

Autostart drives the lifecycle with explicit events (supported by every launch_ros release,
unlike `LifecycleNode(autostart=...)`): configure when the process starts, activate once the node
is `inactive`. A failed configure or activate, or a planner process that exits with an error,
ends the launch with exit code 1, so a misconfigured vehicle stack stops loudly and its supervisor
sees the failure instead of an idle launch without a planner (docs/launch.md).

Arguments left empty keep the value from the params file; see docs/launch.md.
"""

import tempfile

import yaml
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
    Shutdown,
)
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

PACKAGE = 'alpamayo_ros'
EXECUTABLE = 'alpamayo_planner'

# Launch argument -> camera key in the params file (config/planner.yaml, `camera_names`).
CAMERA_TOPIC_ARGS = {
    'cross_left_topic': 'cross_left_120fov',
    'front_wide_topic': 'front_wide_120fov',
    'cross_right_topic': 'cross_right_120fov',
    'front_tele_topic': 'front_tele_30fov',
}
# Launch argument -> node parameter, applied only when the argument is not empty.
PARAM_ARGS = {
    'backend': 'backend',
    'model_dir': 'model_dir',
    'engine_dir': 'engine_dir',
    'odom_topic': 'odometry.topic',
    'rate_hz': 'rate_hz',
}


def _declare_arguments():
    args = [
        DeclareLaunchArgument('namespace', default_value='', description='Namespace of the planner node'),
        DeclareLaunchArgument('node_name', default_value=EXECUTABLE, description='Name of the planner node'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'planner.yaml']),
            description='Full path to the planner parameters file',
        ),
        DeclareLaunchArgument(
            'use_sim_time', default_value='false',
            description='Use /clock (rosbag replay, simulation) instead of the system clock',
        ),
        DeclareLaunchArgument(
            'autostart', default_value='true',
            description='Configure and activate the planner on start; false waits for a lifecycle manager',
        ),
        DeclareLaunchArgument(
            'log_level', default_value='info', description='Logging level (debug, info, warn, error, fatal)'
        ),
        DeclareLaunchArgument(
            'backend', default_value='',
            description='Inference backend: tensorrt, onnxruntime, torch or kinematic (empty: params file)',
        ),
        DeclareLaunchArgument(
            'model_dir', default_value='', description='Model directory with config.json (empty: params file)'
        ),
        DeclareLaunchArgument(
            'engine_dir', default_value='',
            description='TensorRT engine directory (empty: params file, or <model_dir>/engines)',
        ),
        DeclareLaunchArgument(
            'odom_topic', default_value='', description='nav_msgs/Odometry input topic (empty: params file)'
        ),
        DeclareLaunchArgument(
            'rate_hz', default_value='', description='Planning rate on the node clock (empty: params file)'
        ),
    ]
    for arg, camera in CAMERA_TOPIC_ARGS.items():
        args.append(DeclareLaunchArgument(
            arg, default_value='', description=f'Image topic of camera {camera} (empty: params file)'
        ))
    return args


def _overrides(context):
    """Parameter overrides for the arguments that were given (empty means: keep the file's)."""
    overrides = {'use_sim_time': LaunchConfiguration('use_sim_time').perform(context).lower() == 'true'}
    for arg, param in PARAM_ARGS.items():
        value = LaunchConfiguration(arg).perform(context)
        if value:
            overrides[param] = float(value) if param == 'rate_hz' else value
    for arg, camera in CAMERA_TOPIC_ARGS.items():
        value = LaunchConfiguration(arg).perform(context)
        if value:
            overrides[f'cameras.{camera}.topic'] = value
    return overrides


def _namespaced_params_file(path, namespace, node_name):
    """The params file with its `<node_name>:` section keyed `/<namespace>/<node_name>:`.

    rcl matches a section key against the node's fully qualified name, so a file written for
    `alpamayo_planner` would silently not apply under a namespace (what Nav2's RewrittenYaml
    root_key solves). Wildcard keys (`/**`, `/**/name`) already match and are left alone.
    """
    if not namespace.strip('/'):
        return path
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    fq = '/' + namespace.strip('/') + '/' + node_name
    renamed = {(fq if key in (node_name, '/' + node_name) else key): value for key, value in data.items()}
    if renamed == data:
        return path
    out = tempfile.NamedTemporaryFile('w', prefix='alpamayo_planner_', suffix='.yaml', delete=False)
    with out:
        yaml.safe_dump(renamed, out)
    return out.name


def _fail_launch(reason):
    """Raise from a launch action: how launch ends with a non-zero exit code (LaunchService.run()
    logs the error, shuts everything down and returns 1, which `ros2 launch` exits with)."""
    raise RuntimeError(reason)


def _failed(reason):
    return OpaqueFunction(function=lambda context: _fail_launch(f'alpamayo planner: {reason}'))


def _on_planner_exit(event, context):
    """The planner is this launch's reason to run: its exit ends the launch, with exit code 1 when
    the process failed (a crash, or a failed `--autostart` given in the arguments)."""
    if event.returncode != 0:
        _fail_launch(f'alpamayo planner: the process exited with code {event.returncode}')
    if context.is_shutdown:
        return None
    return [Shutdown(reason='alpamayo planner exited')]


def _planner(context):
    """The lifecycle node and, with autostart, the events that configure and activate it."""
    node_name = LaunchConfiguration('node_name').perform(context)
    params_file = _namespaced_params_file(
        LaunchConfiguration('params_file').perform(context),
        LaunchConfiguration('namespace').perform(context),
        node_name,
    )
    planner = LifecycleNode(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=node_name,
        namespace=LaunchConfiguration('namespace'),
        parameters=[params_file, _overrides(context)],
        arguments=['--ros-args', '--log-level', LaunchConfiguration('log_level')],
        output='screen',
        emulate_tty=True,
        on_exit=_on_planner_exit,
    )
    autostart = IfCondition(LaunchConfiguration('autostart'))
    configure = EmitEvent(
        event=ChangeState(
            lifecycle_node_matcher=matches_action(planner),
            transition_id=Transition.TRANSITION_CONFIGURE,
        ),
        condition=autostart,
    )
    activate_when_inactive = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=planner,
            start_state='configuring',
            goal_state='inactive',
            entities=[
                LogInfo(msg='[planner.launch] planner configured; activating'),
                EmitEvent(event=ChangeState(
                    lifecycle_node_matcher=matches_action(planner),
                    transition_id=Transition.TRANSITION_ACTIVATE,
                )),
            ],
        ),
        condition=autostart,
    )
    report_active = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=planner,
            start_state='activating',
            goal_state='active',
            entities=[LogInfo(msg='[planner.launch] planner active')],
        ),
        condition=autostart,
    )
    fail_on_failed_configure = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=planner,
            start_state='configuring',
            goal_state='unconfigured',
            entities=[_failed('configure FAILED (its log above names the parameter and the fix)')],
        ),
        condition=autostart,
    )
    fail_on_failed_activate = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=planner,
            start_state='activating',
            goal_state='inactive',
            entities=[_failed('activate FAILED (see its log above)')],
        ),
        condition=autostart,
    )
    fail_on_error = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=planner,
            goal_state='errorprocessing',
            entities=[_failed('a lifecycle transition raised an error (errorprocessing; see its log above)')],
        ),
        condition=autostart,
    )
    # Handlers first, so no transition can happen before they are registered.
    return [
        activate_when_inactive,
        report_active,
        fail_on_failed_configure,
        fail_on_failed_activate,
        fail_on_error,
        planner,
        configure,
    ]


def generate_launch_description():
    return LaunchDescription([*_declare_arguments(), OpaqueFunction(function=_planner)])
