"""core layer of alpamayo_ros."""

# core math (issue #3): egomotion, history tokens, action space, flow matching, metrics, gates
from .action_space import ActionSpaceConfig, action_to_traj, estimate_v0, traj_to_action  # noqa: F401
from .egomotion import EgoHistory, HistoryUnavailable, PoseBuffer, PoseRejected, future_in_ego_frame  # noqa: F401
from .flow_matching import FlowMatchingSampler, make_noise  # noqa: F401
from .gates import GateResult, check_input, check_output  # noqa: F401
from .history_tokens import HistoryTokenizerConfig, history_token_bins, history_token_ids  # noqa: F401
from .metrics import TrajectoryMetrics, trajectory_metrics  # noqa: F401
