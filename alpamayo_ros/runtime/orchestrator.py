"""One tick over any GraphExecutor (docs/runtime.md §4): the part every backend shares.

vision cache -> one prefill -> K candidates decoding as one batch over the shared prefix ->
expert Euler loop over the KV in place. All decisions (which images are new, sampling, the stop
rule, positions, masks, noise) are made here in numpy with core's functions, so executors that
compute the same logits produce the same tokens.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from alpamayo_ros.core.backend import BackendOutput, SamplingRequest
from alpamayo_ros.core.flow_matching import FlowMatchingSampler, make_noise
from alpamayo_ros.core.rope import decode_positions, expert_offsets
from alpamayo_ros.core.sampling import (
    StopRule,
    extract_reasoning,
    mask_traj_tokens,
    replace_padding_after_eos,
    sample_tokens,
    sample_with_uniforms,
)
from alpamayo_ros.runtime.executor import MASK_VALUE, GraphExecutor, ImageFeatures

if TYPE_CHECKING:
    from alpamayo_ros.core.model_config import TokenLayout
    from alpamayo_ros.core.model_inputs import ModelInputs
    from alpamayo_ros.core.tokenizer import AlpamayoTokenizer

MODES = ("per_candidate", "shared_reasoning")


def sample_next(logits: np.ndarray, request: SamplingRequest, layout: TokenLayout, rng: np.random.Generator
                ) -> np.ndarray:
    """One token per row (B, V) -> (B,): `<i*>` masked; greedy when temperature == 0 (core.sampling)."""
    masked = (layout.traj_token_start_idx, layout.traj_token_end_idx)
    if request.temperature == 0.0:
        z = np.array(logits, dtype=np.float32, copy=True, ndmin=2)
        mask_traj_tokens(z, *masked)
        return z.argmax(axis=1).astype(np.int64)
    return sample_tokens(logits, rng, request.temperature, request.top_p, masked_range=masked)


def sampling_rng(request: SamplingRequest) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(request.seed))


def make_stop_rule(batch: int, request: SamplingRequest, layout: TokenLayout, limit: int | None = None) -> StopRule:
    """Spec §4 stop rule: <|traj_future_start|> + 1 token, HF's <|im_end|> EOS, max_generation_length."""
    max_new = request.max_generation_length if limit is None else min(request.max_generation_length, limit)
    return StopRule(batch=batch, eos_id=layout.traj_future_start, max_new_tokens=max_new,
                    hf_eos_ids=(layout.im_end,), pad_id=layout.pad)


class InputError(ValueError):
    """The tick's inputs do not fit the model (grid, image count, capacity)."""


@dataclass
class GenerationResult:
    """Sampled reasoning of B rows (B = K, or 1 in shared mode)."""

    tokens: np.ndarray  # (B, n) int64 fed to the decoder (the KV holds them); pad after HF's EOS finished a row
    raw_tokens: np.ndarray  # (B, n) what was sampled
    stop_reason: str

    def output_ids(self, layout: TokenLayout) -> np.ndarray:
        """The ids the reference returns: every token after a row's first <|traj_future_start|> is pad."""
        return replace_padding_after_eos(self.tokens, layout.traj_future_start, layout.pad)


@dataclass
class TickStats:
    counters: dict[str, int] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def time(self, name: str, seconds: float) -> None:
        self.timings_s[name] = self.timings_s.get(name, 0.0) + seconds


class VisionCache:
    """Per-frame vision features keyed by ImageInput.key; keeps exactly the current tick's frames."""

    def __init__(self) -> None:
        self._entries: dict[Hashable, ImageFeatures] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def features(self, images: Sequence, executor: GraphExecutor, stats: TickStats) -> list[ImageFeatures]:
        cfg = executor.config
        grid = tuple(int(v) for v in cfg.image_grid_thw)
        new: dict[Hashable, np.ndarray] = {}
        for img in images:
            if tuple(int(v) for v in np.asarray(img.grid_thw).reshape(-1)) != grid:
                raise InputError(
                    f"image {img.key} has grid {np.asarray(img.grid_thw).tolist()}, the model's vision graph is "
                    f"built for {list(grid)}; resize the camera images to the model's resolution"
                )
            if img.key not in self._entries and img.key not in new:
                new[img.key] = np.asarray(img.pixel_rows, dtype=np.float32)
        stats.add("vision_cache_hits", len(images) - len(new))
        if new:
            t0 = time.perf_counter()
            rows = np.stack(list(new.values())).reshape(len(new), cfg.patches_per_image, cfg.vision.patch_dim)
            feats = executor.encode_images(rows)
            stats.time("vision", time.perf_counter() - t0)
            stats.add("vision_calls")
            stats.add("images_encoded", len(new))
            self._entries.update(zip(new.keys(), feats, strict=True))
        current = {img.key for img in images}
        self._entries = {k: v for k, v in self._entries.items() if k in current}
        return [self._entries[img.key] for img in images]


class Orchestrator:
    """Runs ticks on one executor. Not thread-safe: one tick at a time (the node's worker)."""

    def __init__(self, executor: GraphExecutor, tokenizer: AlpamayoTokenizer, mode: str = "per_candidate") -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} must be one of {MODES}")
        self.executor = executor
        self.config = executor.config
        self.tokenizer = tokenizer
        self.mode = mode
        self.vision_cache = VisionCache()

    # ------------------------------------------------------------------ stages
    def _prefill(self, inputs: ModelInputs, feats: list[ImageFeatures], stats: TickStats) -> np.ndarray:
        cfg = self.config
        ids = np.asarray(inputs.input_ids, dtype=np.int64)
        if ids.shape[0] > cfg.prefix_capacity:
            raise InputError(f"prompt has {ids.shape[0]} tokens, prefix_capacity is {cfg.prefix_capacity}")
        image_index = np.flatnonzero(ids == cfg.layout.image_pad).astype(np.int64)
        if image_index.shape[0] != len(feats) * cfg.tokens_per_image:
            raise InputError(
                f"prompt has {image_index.shape[0]} <|image_pad|> tokens but {len(feats)} images × "
                f"{cfg.tokens_per_image} tokens were encoded"
            )
        t0 = time.perf_counter()
        logits = self.executor.prefill(ids, np.asarray(inputs.position_ids, dtype=np.int64), feats, image_index)
        stats.time("prefill", time.perf_counter() - t0)
        stats.add("prefill_calls")
        return logits

    def _sample(self, logits: np.ndarray, request: SamplingRequest, rng: np.random.Generator) -> np.ndarray:
        return sample_next(logits, request, self.config.layout, rng)

    def _sample_on_device(self, tokens: np.ndarray, positions: np.ndarray, slot: int, suffix_mask: np.ndarray,
                          request: SamplingRequest, rng: np.random.Generator, stats: TickStats) -> np.ndarray:
        """decode + sampling graph on the device with this step's uniforms from the same PCG64 stream as
        the host sampler (one per row, none when greedy), so the tokens are the host sampler's; rows whose
        top-p set the device window does not cover are sampled here from their logits, same uniforms."""
        greedy = request.temperature == 0.0
        u = np.zeros(len(tokens)) if greedy else rng.random(len(tokens))
        ids, covered = self.executor.decode_sampled(tokens, positions, slot, suffix_mask, u, request.temperature,
                                                    request.top_p)
        ids = np.asarray(ids, dtype=np.int64).copy()
        if not covered.all():
            lay = self.config.layout
            rows = ~np.asarray(covered, dtype=bool)
            ids[rows] = sample_with_uniforms(self.executor.last_logits()[rows], u[rows], request.temperature,
                                             request.top_p, (lay.traj_token_start_idx, lay.traj_token_end_idx))
        stats.add("device_sampled_rows", int(np.count_nonzero(covered)))
        stats.add("host_sampled_rows", int(np.count_nonzero(~np.asarray(covered, dtype=bool))))
        return ids

    def generate(self, prefill_logits: np.ndarray, prompt_len: int, rope_delta: int, batch: int,
                 request: SamplingRequest, stats: TickStats) -> GenerationResult:
        """Batched decode over the shared prefix; the last sampled token is never fed (spec §4)."""
        cfg, lay, ex = self.config, self.config.layout, self.executor
        rule = make_stop_rule(batch, request, lay, cfg.suffix_capacity + 1)
        rng = sampling_rng(request)
        suffix_mask = np.full((batch, cfg.suffix_capacity), MASK_VALUE, dtype=np.float32)
        ex.start_decode(batch)
        raw = [self._sample(np.broadcast_to(prefill_logits, (batch, prefill_logits.shape[-1])), request, rng)]
        out = [rule.step(raw[-1])]
        t0 = time.perf_counter()
        while not rule.stopped:
            i = len(out) - 1  # suffix slot of the token being fed; slots [0, i) hold the earlier ones
            if i:
                suffix_mask[:, i - 1] = 0.0
            pos = np.broadcast_to(decode_positions(prompt_len + i, rope_delta), (3, batch, 1)).copy()
            stats.add("decode_calls")
            if ex.device_sampling:
                raw.append(self._sample_on_device(out[-1], pos, i, suffix_mask, request, rng, stats))
            else:
                raw.append(self._sample(ex.decode(out[-1], pos, i, suffix_mask), request, rng))
            out.append(rule.step(raw[-1]))
        stats.time("decode", time.perf_counter() - t0)
        stats.add("generated_tokens", len(out) * batch)
        return GenerationResult(np.stack(out, axis=1), np.stack(raw, axis=1), rule.stop_reason)

    def expert_inputs(self, gen: GenerationResult, prompt_ids: np.ndarray, rope_delta: int, k: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Positions (3, K, W) and suffix mask (K, Cs) of spec §5.3 in the split layout (the whole prompt
        is visible to every candidate, so the prefix needs no mask)."""
        cfg = self.config
        p, n = prompt_ids.shape[0], gen.tokens.shape[1]
        seqs = np.concatenate([np.broadcast_to(prompt_ids, (gen.tokens.shape[0], p)), gen.tokens], axis=1)
        offsets, _found = expert_offsets(seqs, cfg.layout.traj_future_start)
        cache_len = p + n - 1  # the last sampled token was never fed
        visible = np.minimum(offsets, cache_len) - p  # suffix slots [0, visible) are seen
        if gen.tokens.shape[0] != k:  # shared reasoning: one row for all K candidates
            offsets, visible = np.repeat(offsets, k), np.repeat(visible, k)
        w = cfg.n_waypoints
        pos = (np.arange(w, dtype=np.int64)[None, :] + (offsets + rope_delta)[:, None])
        positions = np.broadcast_to(pos, (3, k, w)).copy()
        slots = np.arange(cfg.suffix_capacity)[None, :]
        suffix_mask = np.where(slots < visible[:, None], 0.0, MASK_VALUE).astype(np.float32)
        return positions, suffix_mask

    # ------------------------------------------------------------------ the tick
    def run(self, inputs: ModelInputs, request: SamplingRequest, noise: np.ndarray | None = None) -> BackendOutput:
        cfg = self.config
        k = request.num_candidates
        if k > cfg.max_candidates:
            raise InputError(f"num_candidates={k} exceeds the backend's max_candidates={cfg.max_candidates}")
        if request.max_generation_length > cfg.suffix_capacity + 1:
            raise InputError(
                f"max_generation_length={request.max_generation_length} exceeds suffix_capacity+1="
                f"{cfg.suffix_capacity + 1}; raise runtime.suffix_capacity in config.json"
            )
        stats = TickStats()
        stats.add("prefix_kv_copies", 0)
        t_tick = time.perf_counter()
        feats = self.vision_cache.features(inputs.images, self.executor, stats)
        stats.add("images_encoded", 0)
        prompt_ids = np.asarray(inputs.input_ids, dtype=np.int64)
        logits = self._prefill(inputs, feats, stats)
        batch = 1 if self.mode == "shared_reasoning" else k
        gen = self.generate(logits, prompt_ids.shape[0], int(inputs.rope_delta), batch, request, stats)
        positions, suffix_mask = self.expert_inputs(gen, prompt_ids, int(inputs.rope_delta), k)
        x0 = make_noise(k, request.seed, (cfg.n_waypoints, cfg.action_dim)) if noise is None else noise
        steps = FlowMatchingSampler(request.num_diffusion_steps).steps()
        t0 = time.perf_counter()
        actions = self.executor.run_expert(np.asarray(x0, dtype=np.float32), steps, positions, suffix_mask)
        stats.time("expert", time.perf_counter() - t0)
        stats.add("expert_steps", len(steps))
        stats.counters.update(self.executor.take_counters())
        out_ids = gen.output_ids(cfg.layout)
        texts = self.reasoning_texts(prompt_ids, out_ids)
        if batch != k:
            texts = texts * k
            ids = [out_ids[0].tolist()] * k
        else:
            ids = [row.tolist() for row in out_ids]
        stats.time("tick", time.perf_counter() - t_tick)
        stats.counters["decode_steps"] = int(gen.tokens.shape[1])
        return BackendOutput(actions=np.asarray(actions, dtype=np.float32), reasoning=texts, generated_ids=ids,
                             timings_s=stats.timings_s, counters=stats.counters)

    def reasoning_texts(self, prompt_ids: np.ndarray, tokens: np.ndarray) -> list[str]:
        """CoC per row of the output ids: decode the sequence with specials, text between <|cot_start|> and
        <|cot_end|> (so a <|cot_end|> sampled after <|traj_future_start|> does not count, as in the reference)."""
        prompt_text = self.tokenizer.decode(prompt_ids[-64:])  # the CoC start is in the prompt's tail
        return [extract_reasoning(prompt_text + self.tokenizer.decode(row)) for row in tokens]

    def close(self) -> None:
        self.vision_cache.clear()
        self.executor.close()
