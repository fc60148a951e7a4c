"""Topic names shared by the demo bag, the replay player/recorder and the launch files.

The camera topics follow image_transport naming (`<base>/compressed`). A real bag names its own
topics; the replay maps them to the node's camera slots with `--camera ID=TOPIC` options.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CameraTopic:
    camera_id: int  # model camera index (spec §1.1): 0, 1, 2, 6
    topic: str
    compressed: bool = True


CAMERA_NAMES = {0: "cross_left_120fov", 1: "front_wide_120fov", 2: "cross_right_120fov", 6: "front_tele_30fov"}
DEFAULT_CAMERAS: tuple[CameraTopic, ...] = tuple(
    CameraTopic(cid, f"/camera/{name}/image_raw/compressed") for cid, name in CAMERA_NAMES.items()
)
DEFAULT_ODOM_TOPIC = "/odom"
DEFAULT_SEGMENT_TOPIC = "/alpamayo/demo/segment"  # std_msgs/String phase label (demo bags only)
CLOCK_TOPIC = "/clock"
NODE_NAME = "alpamayo_planner"
# std_msgs/String navigation instruction (Alpamayo 1.5): the node's default route.topic, resolved
DEFAULT_ROUTE_TOPIC = f"/{NODE_NAME}/route_instruction"
# Node outputs (node-relative, DESIGN.md §5) that the online replay records.
OUTPUT_CANDIDATES = "candidates"
OUTPUT_SELECTED = "selected_path"
OUTPUT_REASONING = "reasoning"


def resolve_node_topic(topic: str, node_name: str = NODE_NAME, namespace: str = "") -> str:
    """A node's topic name as rcl resolves it: ``~/x`` -> /ns/node/x, ``x`` -> /ns/x, ``/x`` stays."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if topic.startswith("~"):
        return f"{ns}/{node_name}/{topic[1:].lstrip('/')}"
    return topic if topic.startswith("/") else f"{ns}/{topic}"
