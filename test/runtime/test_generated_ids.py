"""Generated ids as the reference returns them (pad after the first <|traj_future_start|>), over a
scripted executor whose logits force each row's tokens, so every case is exact and fast."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alpamayo_ros.core.backend import SamplingRequest
from alpamayo_ros.runtime.config import load_config
from alpamayo_ros.runtime.executor import GraphExecutor, ImageFeatures
from alpamayo_ros.runtime.orchestrator import Orchestrator


class ScriptedExecutor(GraphExecutor):
    """Logits that make greedy decoding emit `script[row][i]` at step i; records the fed tokens."""

    name = "scripted"

    def __init__(self, config, script: list[list[int]]) -> None:
        super().__init__(config)
        self.script = script
        self.fed: list[np.ndarray] = []

    def _logits(self, step: int) -> np.ndarray:
        logits = np.zeros((len(self.script), self.config.text.vocab_size), dtype=np.float32)
        for row, tokens in enumerate(self.script):
            logits[row, tokens[min(step, len(tokens) - 1)]] = 10.0
        return logits

    def encode_images(self, pixel_rows):
        c = self.config
        return [ImageFeatures(np.zeros((c.tokens_per_image, c.text.hidden_size), np.float32),
                              np.zeros((c.num_deepstack, c.tokens_per_image, c.text.hidden_size), np.float32))
                for _ in range(pixel_rows.shape[0])]

    def prefill(self, input_ids, position_ids, features, image_token_index):
        return self._logits(0)[0]  # every row starts from the same prompt: scripts share token 0

    def start_decode(self, batch):
        assert batch == len(self.script)

    def decode(self, token_ids, position_ids, write_index, suffix_mask):
        self.fed.append(np.asarray(token_ids).copy())
        return self._logits(write_index + 1)

    def run_expert(self, x0, steps, position_ids, suffix_mask):
        return x0


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, synthetic):
    return load_config(tiny_model_dir), synthetic.tokenizer, synthetic.tick(3).inputs


def test_ids_after_traj_future_start_are_pad_and_the_cache_keeps_the_sampled_tokens(setup) -> None:
    cfg, tok, inputs = setup
    lay = cfg.layout
    h, i, q, r = (int(tok.encode(c)[0]) for c in "hiqr")
    tfs, cot_end, pad = lay.traj_future_start, lay.cot_end, lay.pad
    script = [
        [h, i, cot_end, tfs, q, r],  # <|traj_future_start|> last of the batch: one more token, then stop
        [h, tfs, cot_end, q, r, r],  # early <|traj_future_start|>, then a <|cot_end|> the reference pads away
    ]
    ex = ScriptedExecutor(cfg, script)
    out = Orchestrator(ex, tok).run(inputs, SamplingRequest(num_candidates=2, temperature=0.0))
    assert out.generated_ids == [[h, i, cot_end, tfs, pad], [h, tfs, pad, pad, pad]]
    # The decoder was fed the sampled tokens (the last sampled token is never fed): the KV keeps them.
    fed = np.stack(ex.fed, axis=1)
    np.testing.assert_array_equal(fed, [[h, i, cot_end, tfs], [h, tfs, cot_end, q]])
    # Reasoning comes from the returned ids: row 1's <|cot_end|> after <|traj_future_start|> does not count.
    assert out.reasoning == ["hi", ""]
    assert out.counters["decode_calls"] == len(out.generated_ids[0]) - 1


def test_shared_reasoning_returns_the_padded_row_k_times(setup) -> None:
    cfg, tok, inputs = setup
    lay = cfg.layout
    h = int(tok.encode("h")[0])
    ex = ScriptedExecutor(cfg, [[h, lay.cot_end, lay.traj_future_start, h, h]])
    out = Orchestrator(ex, tok, mode="shared_reasoning").run(inputs, SamplingRequest(num_candidates=3, temperature=0.0))
    assert out.generated_ids == [[h, lay.cot_end, lay.traj_future_start, lay.pad]] * 3
    assert out.reasoning == ["h"] * 3
