"""Host sampling per decode step at Alpamayo's vocabulary: K rows of 155,697 logits, flat and peaked.

`core.sampling.sample_tokens` (temperature 0.6, top-p 0.98, the 4000 `<i*>` ids masked, as the
orchestrator calls it) on synthetic logits of three shapes, and, with `--whole-vocabulary`, the
previous sampler (float64 softmax of the whole vocabulary, per-row sort) for comparison; both draw the
same tokens. Prints median / p90 / min ms per step and the load average; writes JSON. Also prints this
machine's floor for a flat row: one float32 exp over the K × V logits (every token's weight enters the
normaliser, so an exact sampler cannot do less on flat logits), timed the same way.

    python benchmarks/bench_sampling.py [--k 6] [--steps 40] [--whole-vocabulary] [--out ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _results import write_json  # noqa: E402

VOCAB = 155_697
MASKED = (151_669, 155_669)  # the <i*> ids of the released tokenizer (spec §2.2)


def logit_shapes(k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    flat = rng.standard_normal((k, VOCAB)).astype(np.float32)  # top-p keeps ~65 % of the vocabulary
    peaked = (rng.standard_normal((k, VOCAB)) * 2.0).astype(np.float32)
    peaked[:, rng.integers(0, MASKED[0], 6)] += 20.0  # an LLM step: a handful of likely tokens
    spread = (rng.standard_normal((k, VOCAB)) * 3.0).astype(np.float32)  # thousands of candidates
    return {"flat": flat, "peaked": peaked, "spread": spread}


def whole_vocabulary(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from alpamayo_ros.core.sampling import mask_traj_tokens, top_p_probs

    z = np.array(logits, dtype=np.float32, copy=True)
    mask_traj_tokens(z, *MASKED)
    p = top_p_probs(z, 0.6, 0.98)
    cdf = np.cumsum(p, axis=1)
    u = rng.random(p.shape[0]) * cdf[:, -1]
    return np.array([np.searchsorted(cdf[r], u[r], side="right") for r in range(p.shape[0])])


def timed(fn, steps: int) -> dict[str, float]:
    fn(0)
    times = []
    for step in range(steps):
        t = time.perf_counter()
        fn(step)
        times.append(1e3 * (time.perf_counter() - t))
    return {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)),
            "min_ms": float(np.min(times))}


def main() -> int:
    from alpamayo_ros.core.sampling import sample_tokens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--whole-vocabulary", action="store_true", help="also time the previous sampler (slow)")
    ap.add_argument("--out", default=str(ROOT / "artifacts" / "bench" / "sampling.json"))
    args = ap.parse_args()
    results: dict = {"load_avg_at_start": list(os.getloadavg()), "k": args.k, "vocab": VOCAB, "shapes": {}}
    print(f"load average {results['load_avg_at_start']}; K={args.k}, V={VOCAB}, T=0.6, top-p 0.98")
    print(f"{'logits':<8} {'sampler':<18} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}")
    shapes = logit_shapes(args.k, np.random.default_rng(0))
    scratch = np.empty_like(shapes["flat"])
    results["exp_floor"] = timed(lambda s: np.exp(shapes["flat"], out=scratch), args.steps)
    print(f"{'(floor)':<8} {'exp of K x V':<18} {results['exp_floor']['median_ms']:>10.2f} "
          f"{results['exp_floor']['p90_ms']:>8.2f} {results['exp_floor']['min_ms']:>8.2f}")
    for name, logits in shapes.items():
        entry = {"vectorised": timed(lambda s, z=logits: sample_tokens(z, np.random.default_rng(s), 0.6, 0.98,
                                                                        MASKED), args.steps)}
        if args.whole_vocabulary:
            entry["whole_vocabulary"] = timed(lambda s, z=logits: whole_vocabulary(z, np.random.default_rng(s)),
                                              max(3, args.steps // 8))
            same = all(np.array_equal(sample_tokens(logits, np.random.default_rng(s), 0.6, 0.98, MASKED),
                                      whole_vocabulary(logits, np.random.default_rng(s))) for s in range(5))
            entry["same_tokens"] = same
        results["shapes"][name] = entry
        for sampler, row in entry.items():
            if isinstance(row, dict):
                print(f"{name:<8} {sampler:<18} {row['median_ms']:>10.2f} {row['p90_ms']:>8.2f} {row['min_ms']:>8.2f}")
        if "same_tokens" in entry:
            print(f"{name:<8} same tokens as the whole-vocabulary sampler: {entry['same_tokens']}")
    results["load_avg_at_end"] = list(os.getloadavg())
    print(f"load average at end {results['load_avg_at_end']}")
    write_json(results, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
