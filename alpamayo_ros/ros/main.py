"""`alpamayo-planner`: run the lifecycle planner node without launch_ros.

    alpamayo-planner [--autostart] --ros-args --params-file config/planner.yaml

With `--autostart` (or the parameter `autostart: true`) the node configures and activates itself,
for machines without launch_ros or a lifecycle manager; a failed configure then exits with code 1
(the log says which parameter and how to fix it). Without it the node waits in `unconfigured` for
lifecycle service calls (`ros2 lifecycle set /alpamayo_planner configure`).
"""

from __future__ import annotations

import argparse
import signal
import sys

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.signals import SignalHandlerOptions
from rclpy.utilities import remove_ros_args

from .node import PlannerNode

__all__ = ["autostart", "main"]


def autostart(node: PlannerNode) -> bool:
    """configure + activate; False (with the reason already logged) when either fails."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().fatal(f"autostart: configure failed: {node.last_configure_error}")
        return False
    if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
        node.get_logger().fatal("autostart: activate failed")
        return False
    return True


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="alpamayo-planner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--autostart", action="store_true", help="configure and activate on start")
    return parser.parse_args(remove_ros_args(argv)[1:])


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _spin_until_interrupted(executor: SingleThreadedExecutor) -> None:
    """Spin in short waits: a signal is only delivered when Python code runs, and on sim time with
    no /clock nothing else would wake a blocking spin()."""
    while rclpy.ok():
        executor.spin_once(timeout_sec=0.2)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args = _parse(argv)
    # SIGINT/SIGTERM become KeyboardInterrupt here (not rclpy's handler, which shuts the context down
    # first), so the node can still run its shutdown transition (release the backend, announce the
    # state) on a live context.
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    node = PlannerNode()
    # One executor thread is enough: every callback only hands work on (decode pool, inference
    # worker), so services answer between them. A MultiThreadedExecutor busy-spins under
    # use_sim_time with rclpy 9 (Kilted wheels; measured: ~5000 empty waits/s while /clock ticks),
    # starving the node's own threads of the GIL.
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    code = 0
    try:
        if (args.autostart or node.get_parameter("autostart").value) and not autostart(node):
            code = 1
        else:
            _spin_until_interrupted(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            node.trigger_shutdown()  # releases the backend and worker threads from any state
        except Exception:  # already finalized
            pass
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
