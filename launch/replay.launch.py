"""Replay a bag into the planner node on sim time and score it.

    ros2 launch alpamayo_ros replay.launch.py bag:=/data/drive1 out:=/tmp/replay1
    ros2 launch alpamayo_ros replay.launch.py bag:=/data/drive1 player:=ros2bag rate:=0.5

player:=alpamayo (default) runs `alpamayo-ros replay BAG --online --node external`: it publishes
the bag and /clock in lockstep with the planner (each tick waits for its plan, so results do not
depend on inference speed), records the node's outputs to <out>/outputs and writes the scored
report to <out>. player:=ros2bag runs `ros2 bag play --clock` at `rate` (free-running, not
scored; record with `ros2 bag record` and score offline). See docs/replay.md.

The launch ends when the player exits, with exit code 1 if the player (or the planner) failed.
"""

from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    ExecuteProcess,
    IncludeLaunchDescription,
    RegisterEventHandler,
)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.launch_description import LaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.substitutions import FindPackagePrefix, FindPackageShare

PACKAGE = 'alpamayo_ros'


def _after_player(event, context):
    """The replay is over when the player exits: stop the planner too. A failed player fails the
    launch (raising is how launch ends with a non-zero exit code)."""
    if event.returncode != 0:
        raise RuntimeError(f'replay player exited with code {event.returncode}')
    return [EmitEvent(event=Shutdown(reason='replay finished'))]


def generate_launch_description():
    bag = LaunchConfiguration('bag')
    out = LaunchConfiguration('out')
    player = LaunchConfiguration('player')
    namespace = LaunchConfiguration('namespace')
    args = [
        DeclareLaunchArgument('bag', description='rosbag2 directory (or .mcap file) to replay'),
        DeclareLaunchArgument('out', default_value='replay_report', description='Report directory'),
        DeclareLaunchArgument(
            'player', default_value='alpamayo',
            description='alpamayo (lockstep, scored) or ros2bag (ros2 bag play --clock, not scored)',
        ),
        DeclareLaunchArgument('rate', default_value='1.0', description='ros2bag player rate'),
        DeclareLaunchArgument('namespace', default_value='', description='Namespace of the planner node'),
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([FindPackageShare(PACKAGE), 'config', 'planner.yaml']),
            description='Full path to the planner parameters file',
        ),
        DeclareLaunchArgument('backend', default_value='', description='Inference backend (empty: params file)'),
        DeclareLaunchArgument('model_dir', default_value='', description='Model directory (empty: params file)'),
        DeclareLaunchArgument('log_level', default_value='info', description='Planner logging level'),
    ]
    planner = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare(PACKAGE), 'launch', 'planner.launch.py'])),
        launch_arguments={
            'use_sim_time': 'true',
            'autostart': 'true',
            'namespace': namespace,
            'params_file': LaunchConfiguration('params_file'),
            'backend': LaunchConfiguration('backend'),
            'model_dir': LaunchConfiguration('model_dir'),
            'log_level': LaunchConfiguration('log_level'),
            # Lockstep: one planning-timer firing per /clock step of the player (docs/launch.md).
            'rate_hz': PythonExpression(["'50.0' if '", player, "' == 'alpamayo' else ''"]),
        }.items(),
    )
    alpamayo_player = ExecuteProcess(
        cmd=[
            PathJoinSubstitution([FindPackagePrefix(PACKAGE), 'lib', PACKAGE, 'alpamayo-ros']),
            'replay', bag, '--online', '--node', 'external', ['--namespace=', namespace], ['--out=', out],
            ['--params-file=', LaunchConfiguration('params_file')],
            ['--backend=', LaunchConfiguration('backend')], ['--model-dir=', LaunchConfiguration('model_dir')],
        ],
        output='screen',
        condition=IfCondition(PythonExpression(["'", player, "' == 'alpamayo'"])),
    )
    ros2bag_player = ExecuteProcess(
        cmd=['ros2', 'bag', 'play', bag, '--clock', '--rate', LaunchConfiguration('rate')],
        output='screen',
        condition=IfCondition(PythonExpression(["'", player, "' == 'ros2bag'"])),
    )
    stop_after_player = [
        RegisterEventHandler(OnProcessExit(target_action=p, on_exit=_after_player))
        for p in (alpamayo_player, ros2bag_player)
    ]
    return LaunchDescription([*args, planner, alpamayo_player, ros2bag_player, *stop_after_player])
