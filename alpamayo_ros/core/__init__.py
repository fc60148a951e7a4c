"""core layer of alpamayo_ros."""

# core math (issue #3): egomotion, history tokens, action space, flow matching, metrics, gates
from .action_space import ActionSpaceConfig, action_to_traj, estimate_v0, traj_to_action  # noqa: F401
from .egomotion import EgoHistory, HistoryUnavailable, PoseBuffer, PoseRejected, future_in_ego_frame  # noqa: F401
from .flow_matching import FlowMatchingSampler, make_noise  # noqa: F401
from .gates import GateResult, check_input, check_output  # noqa: F401
from .history_tokens import HistoryTokenizerConfig, history_token_bins, history_token_ids  # noqa: F401
from .metrics import TrajectoryMetrics, trajectory_metrics  # noqa: F401

# isort: split
# model inputs (issue #4): frames, image preprocessing, tokenizer, prompt, rope, sampling
from .frames import FrameSelectionError, FrameStore, TickSelection  # noqa: F401
from .image_preprocess import (  # noqa: F401
    ImageDecodeError,
    PreprocessedFrame,
    decode_compressed,
    decode_raw,
    preprocess_image,
)
from .model_config import InputConfig, ModelInputConfig, ProcessorConfig, SamplingConfig, TokenLayout  # noqa: F401
from .model_inputs import ImageInput, ModelInputs, build_model_inputs  # noqa: F401
from .rope import expert_positions_and_mask, rope_index  # noqa: F401
from .sampling import StopRule, extract_reasoning, sample_tokens  # noqa: F401
from .tokenizer import AlpamayoTokenizer  # noqa: F401
