"""`alpamayo-planner`: run the lifecycle planner node without launch_ros.

    alpamayo-planner [--autostart] --ros-args --params-file config/planner.yaml

With `--autostart` (or the parameter `autostart: true`) the node configures and activates itself,
for machines without launch_ros or a lifecycle manager; a failed configure then exits with code 1
(the log says which parameter and how to fix it). Without it the node waits in `unconfigured` for
lifecycle service calls (`ros2 lifecycle set /alpamayo_planner configure`).

SIGINT or SIGTERM stops the node and exits 0 (a failed `--autostart` still exits 1). Only the first
one interrupts: a terminal Ctrl-C reaches a node under launch twice (the terminal's process group,
then launch's own SIGINT, and launch escalates to SIGTERM), and those must not abort the cleanup the
first one started (launch's SIGKILL escalation still ends a cleanup that hangs).
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
    # prog: the name it was started by (alpamayo-planner from pip, alpamayo_planner from colcon)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--autostart", action="store_true", help="configure and activate on start")
    return parser.parse_args(remove_ros_args(argv)[1:])


class _StopSignals:
    """SIGINT/SIGTERM handling: the first signal raises KeyboardInterrupt in the main thread (it
    stops the spin loop or a long configure); once stopping or cleaning up, signals are ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.stopping = False
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if not self.stopping:
            self.stopping = True
            raise KeyboardInterrupt

    def begin_cleanup(self) -> None:
        self.stopping = True

    def ignore(self) -> None:
        """After the cleanup, for the rest of the process (main() is its entry point): the
        interpreter restores the default handlers on its way out, where a late signal would still
        kill the process with -SIGINT; SIG_IGN survives that."""
        for signum in self.SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def _spin_until_interrupted(executor: SingleThreadedExecutor) -> None:
    """Spin in short waits: a signal is only delivered when Python code runs, and on sim time with
    no /clock nothing else would wake a blocking spin()."""
    while rclpy.ok():
        executor.spin_once(timeout_sec=0.2)


def _run(args: argparse.Namespace, signals: _StopSignals) -> int:
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
        signals.begin_cleanup()
        node.get_logger().info("shutting down (further SIGINT/SIGTERM are ignored until done)")
        try:
            node.trigger_shutdown()  # releases the backend and worker threads from any state
        except Exception:  # already finalized
            pass
        executor.shutdown()
        node.destroy_node()
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    args = _parse(argv)
    # Our handlers, not rclpy's (which shuts the context down first), so that the node can still
    # run its shutdown transition (release the backend, announce the state) on a live context.
    signals = _StopSignals()
    try:
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
        return _run(args, signals)
    except KeyboardInterrupt:  # stopped before the node existed
        return 0
    finally:
        if rclpy.ok():
            rclpy.shutdown()
        signals.ignore()


if __name__ == "__main__":
    sys.exit(main())
