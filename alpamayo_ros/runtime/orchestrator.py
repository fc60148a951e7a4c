"""One tick over any GraphExecutor (docs/runtime.md §4): the part every backend shares.

vision cache -> one prefill -> K candidates decoding as one batch over the shared prefix ->
expert Euler loop over the KV in place. All decisions (which images are new, sampling, the stop
rule, positions, masks, noise) are made here in numpy with core's functions, so executors that
compute the same logits produce the same tokens.

Navigation guidance (Alpamayo 1.5, `SamplingRequest.nav_guidance_weight` with a route in the prompt):
the reference re-prefills the prompt without its route span and runs the sampled reasoning over it.
The two prompts are identical up to the route span (every image and the history come before it), so
that head's K/V are the prefill's own: one `extend` call computes only the unguided prompt's tail and
each candidate's reasoning over the head (the route span hidden), and the expert runs both branches as
one batch of 2K rows, blending (1 − w)·v_unguided + w·v_route in the graph. `answer` is the question
prompt's generation (Alpamayo 1.5 VQA) over the same cached image embeddings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from alpamayo_ros.core.backend import AnswerOutput, BackendOutput, SamplingRequest
from alpamayo_ros.core.flow_matching import FlowMatchingSampler, initial_noise
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

    def guidance_inputs(self, inputs: ModelInputs, gen: GenerationResult, k: int, weight: float,
                        expert: tuple[np.ndarray, np.ndarray], stats: TickStats
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The unguided branch: `extend` its K/V, then the expert inputs of both branches (2K rows).

        Returns positions (3, 2K, W), suffix mask (2K, Cs), prefix mask (2K, P) and row mix (2K, 2K).
        """
        cfg, lay = self.config, self.config.layout
        assert inputs.unguided is not None
        ids_a = np.asarray(inputs.input_ids, dtype=np.int64)
        ids_b = np.asarray(inputs.unguided.input_ids, dtype=np.int64)
        p_a, p_b = ids_a.shape[0], ids_b.shape[0]
        differ = np.flatnonzero(ids_a[:p_b] != ids_b)
        if not differ.size or not np.array_equal(ids_a[p_a - (p_b - differ[0]):], ids_b[differ[0]:]):
            raise InputError("the unguided prompt is not the prompt without a span: cannot guide by the route")
        head, tail = int(differ[0]), ids_b[differ[0]:]  # head: identical tokens and positions in both prompts
        out_ids = gen.output_ids(lay)  # the reference forwards these (pad after <|traj_future_start|>)
        n = out_ids.shape[1]
        offsets, _ = expert_offsets(np.concatenate([np.broadcast_to(ids_a, (len(out_ids), p_a)), out_ids], 1),
                                    lay.traj_future_start)
        seen = np.minimum(offsets - p_a, n)  # reasoning tokens the unguided expert rows see (all n without EOS)
        t_gen, t = int(seen.max()), tail.shape[0] + int(seen.max())
        if t > cfg.suffix_capacity:
            raise InputError(f"navigation guidance needs {t} suffix slots (the prompt's {tail.shape[0]}-token tail "
                             f"after the route + {t_gen} reasoning tokens), runtime.suffix_capacity is "
                             f"{cfg.suffix_capacity}; raise it in config.json or lower max_generation_length")
        rows = out_ids.shape[0]
        tokens = np.concatenate([np.broadcast_to(tail, (rows, tail.shape[0])), out_ids[:, :t_gen]], axis=1)
        pos = np.empty((3, rows, t), dtype=np.int64)
        pos[:, :, : tail.shape[0]] = np.asarray(inputs.unguided.position_ids)[:, None, head:]
        pos[:, :, tail.shape[0]:] = decode_positions(p_b, int(inputs.rope_delta), t_gen)
        hidden = np.zeros((rows, t), dtype=bool)
        hidden[:, tail.shape[0]:] = out_ids[:, :t_gen] == lay.pad  # as the reference's attention mask
        causal = np.arange(t)[None, :] <= np.arange(t)[:, None]
        own = np.where(causal[None] & ~hidden[:, None, :], 0.0, MASK_VALUE).astype(np.float32)
        prefix_mask = np.where(np.arange(p_a) < head, 0.0, MASK_VALUE).astype(np.float32)[None]
        t0 = time.perf_counter()
        self.executor.extend(tokens, pos, prefix_mask, own)
        stats.time("guidance_extend", time.perf_counter() - t0)
        stats.add("extend_calls")
        stats.add("extend_tokens", rows * t)
        positions, suffix_mask = expert
        if rows != k:  # shared reasoning: one reasoning row for the K candidates
            seen = np.repeat(seen, k)
        slots = np.arange(cfg.suffix_capacity)[None, :]
        unguided_mask = np.where(slots < tail.shape[0] + seen[:, None], 0.0, MASK_VALUE).astype(np.float32)
        eye = np.eye(k, dtype=np.float32)
        mix = np.block([[weight * eye, (1.0 - weight) * eye], [weight * eye, (1.0 - weight) * eye]])
        return (np.concatenate([positions, positions - (p_a - p_b)], axis=1),
                np.concatenate([suffix_mask, unguided_mask]),
                np.concatenate([np.zeros((k, p_a), np.float32), np.repeat(prefix_mask, k, axis=0)]),
                mix.astype(np.float32))

    # ------------------------------------------------------------------ the tick
    def run(self, inputs: ModelInputs, request: SamplingRequest, noise: np.ndarray | None = None) -> BackendOutput:
        cfg = self.config
        k = request.num_candidates
        guided = request.nav_guidance_weight > 0.0 and inputs.unguided is not None
        if k > cfg.max_candidates:
            raise InputError(f"num_candidates={k} exceeds the backend's max_candidates={cfg.max_candidates}")
        if guided and not self.executor.supports_guidance:
            raise InputError(f"navigation guidance needs the `extend` graph, which {self.executor.name} does not have "
                             "(an Alpamayo 1.5 export or engine build has it); set nav_guidance_weight to 0")
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
        shape = (cfg.n_waypoints, cfg.action_dim)
        x0 = initial_noise(k, request.seed, shape, request.noise_temperature) if noise is None else noise
        x0 = np.asarray(x0, dtype=np.float32)
        guidance: tuple[np.ndarray, ...] = ()  # (prefix mask, row mix) of the 2K guided rows
        if guided:
            positions, suffix_mask, *masks = self.guidance_inputs(
                inputs, gen, k, request.nav_guidance_weight, (positions, suffix_mask), stats)
            guidance = tuple(masks)
            x0 = np.concatenate([x0, x0])  # both branches start from the same noise and stay equal
        steps = FlowMatchingSampler(request.num_diffusion_steps).steps()
        t0 = time.perf_counter()
        actions = self.executor.run_expert(x0, steps, positions, suffix_mask, *guidance)[:k]
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
                             timings_s=stats.timings_s, counters=stats.counters,
                             nav_guidance_weight=request.nav_guidance_weight if guided else 0.0)

    # ------------------------------------------------------------------ questions
    def answer(self, inputs: ModelInputs, request: SamplingRequest, max_new_tokens: int,
               cancelled: Callable[[], bool] | None = None) -> AnswerOutput:
        """Alpamayo 1.5's `generate_text` on the question prompt: one row, the request's temperature and
        top-p without the `<i*>` mask (the reference sets no logits processor), until `<|answer_end|>`,
        an end of turn (`<|im_end|>`, `<|endoftext|>`), `max_new_tokens` or `cancelled()`.

        The answer is the text before `<|answer_end|>` (the reference's extraction), special tokens
        dropped; `complete` says whether the model closed it.
        """
        cfg, lay, ex = self.config, self.config.layout, self.executor
        stats = TickStats()
        t_all = time.perf_counter()
        feats = self.vision_cache.features(inputs.images, ex, stats)
        ids = np.asarray(inputs.input_ids, dtype=np.int64)
        logits = self._prefill(inputs, feats, stats)
        limit = max(1, min(max_new_tokens, cfg.suffix_capacity + 1))
        answer_end = lay.special_id("answer_end")
        stops = {answer_end, lay.im_end, lay.pad}
        rng = sampling_rng(request)
        suffix_mask = np.full((1, cfg.suffix_capacity), MASK_VALUE, dtype=np.float32)
        ex.start_decode(1)
        tokens = [int(self._sample_text(logits[None], request, rng)[0])]
        while tokens[-1] not in stops and len(tokens) < limit and not (cancelled is not None and cancelled()):
            i = len(tokens) - 1
            if i:
                suffix_mask[:, i - 1] = 0.0
            pos = decode_positions(ids.shape[0] + i, int(inputs.rope_delta))
            tokens.append(int(self._sample_text(ex.decode(np.array(tokens[-1:]), pos, i, suffix_mask), request, rng)[0]))
        stats.time("answer", time.perf_counter() - t_all)
        end = next((j for j, tok in enumerate(tokens) if tok in stops), len(tokens))
        text = self.tokenizer.decode(tokens[:end], skip_special_tokens=True).strip()
        return AnswerOutput(text=text, complete=end < len(tokens) and tokens[end] == answer_end,
                            num_tokens=len(tokens), timings_s=stats.timings_s)

    @staticmethod
    def _sample_text(logits: np.ndarray, request: SamplingRequest, rng: np.random.Generator) -> np.ndarray:
        if request.temperature == 0.0:
            return np.asarray(logits, dtype=np.float32).reshape(1, -1).argmax(axis=1)
        return sample_tokens(logits, rng, request.temperature, request.top_p)

    def reasoning_texts(self, prompt_ids: np.ndarray, tokens: np.ndarray) -> list[str]:
        """CoC per row of the output ids: decode the sequence with specials, text between <|cot_start|> and
        <|cot_end|> (so a <|cot_end|> sampled after <|traj_future_start|> does not count, as in the reference)."""
        prompt_text = self.tokenizer.decode(prompt_ids[-64:])  # the CoC start is in the prompt's tail
        return [extract_reasoning(prompt_text + self.tokenizer.decode(row)) for row in tokens]

    def close(self) -> None:
        self.vision_cache.clear()
        self.executor.close()
