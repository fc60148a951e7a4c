"""The reference's open-loop evaluation protocol, as a replay mode.

NVIDIA's public evaluation recipe (NVlabs/alpamayo-recipes, `recipes/alpamayo1_5_quant/eval.py`)
scores a model on PhysicalAI-AV clips like this:

- one sample per clip at t0 = 5.1 s of clip time (the reference loader's default t0);
- K = 6 trajectories, reasoning sampled at temperature 0.6, top-p 0.98, at most 256 tokens;
- the seed (42) is set again before every clip;
- per clip, **minADE = min over the K samples of the mean xy distance over the 64 future
  waypoints** (t0 + 0.1 … 6.4 s, ego frame at t0) to the ground truth;
- the score is the plain mean of that over the clips that ran ("Average minADE over N/M clips");
  clips that failed are listed and left out.

Here a clip is a bag (`alpamayo-ros import-pai` writes one per clip, with the clip's time origin in
its metadata); each t0 is one replay tick. Seed 42 "set again before every clip" is the planner's
`seed_policy: fixed` with `seed: 42` (every tick samples from the same seed). The planner's gates
are off, as the reference has none: every sample is scored. The per-tick value is the replay's
own `min_ade` (core.metrics: same definition), so the protocol number and the package's metrics
come from the same scores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alpamayo_ros.tools.scoring import HORIZON_STEPS, TickRecord, TickScore

# Bag metadata (rosbag2 custom_data) that import-pai writes and replay reads.
META_PREFIX = "alpamayo_ros."
META_TIME_ORIGIN = META_PREFIX + "clip_time_origin_ns"  # bag time (ns) of clip time 0
META_CLIP_ID = META_PREFIX + "clip_id"
T0_POLICIES = ("exact", "node")


@dataclass(frozen=True)
class Protocol:
    name: str = "reference"
    t0_offsets_s: tuple[float, ...] = (5.1,)  # clip time of each sample
    num_candidates: int = 6
    temperature: float = 0.6
    top_p: float = 0.98
    seed: int = 42
    max_generation_length: int = 256
    num_diffusion_steps: int = 10
    waypoints: int = HORIZON_STEPS
    source: str = "NVlabs/alpamayo-recipes recipes/alpamayo1_5_quant/eval.py"
    metric: str = "minADE"
    definition: str = ("per clip: min over the K samples of the mean xy L2 distance over the 64 future waypoints "
                       "(t0+0.1 … t0+6.4 s, ego frame at t0); reported: the mean over the clips that ran")

    def node_overrides(self) -> dict[str, Any]:
        """Node parameters that make the planner sample as the protocol does."""
        return {"num_candidates": self.num_candidates, "temperature": self.temperature, "top_p": self.top_p,
                "seed": self.seed, "seed_policy": "fixed", "max_generation_length": self.max_generation_length,
                "reasoning_mode": "per_candidate", "num_diffusion_steps": self.num_diffusion_steps,
                "gates_enabled": False}

    def deviations(self, params: Any) -> list[str]:
        """How the planner's NodeParams differ from the protocol (empty: faithful)."""
        out = []
        for name, want in self.node_overrides().items():
            have = getattr(params, name, None)
            if have is not None and have != want:
                out.append(f"{name} = {have} (protocol: {want})")
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "t0_offsets_s": list(self.t0_offsets_s),
                "K": self.num_candidates, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                "seed_reset": "before every clip (seed_policy fixed)", "max_generation_length": self.max_generation_length,
                "reasoning": "sampled per candidate", "diffusion_steps": self.num_diffusion_steps, "gates": "off", "waypoints": self.waypoints, "metric": self.metric, "definition": self.definition}


REFERENCE = Protocol()


def bag_custom_data(bag: str | Path) -> dict[str, str]:
    """The `custom_data` map of a rosbag2 directory's metadata.yaml ({} for a bare .mcap or none)."""
    path = Path(bag) / "metadata.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        info = (yaml.safe_load(path.read_text()) or {}).get("rosbag2_bagfile_information") or {}
    except (OSError, yaml.YAMLError):  # an unreadable bag: replay reports that itself
        return {}
    custom = info.get("custom_data") or {}
    return {str(k): str(v) for k, v in custom.items()} if isinstance(custom, dict) else {}


def clip_time_origin_s(bag: str | Path) -> float | None:
    """Bag time (s) of clip time 0 from the bag's metadata (import-pai bags), else None."""
    value = bag_custom_data(bag).get(META_TIME_ORIGIN)
    try:
        return int(value) / 1e9 if value is not None else None
    except ValueError:
        return None


@dataclass
class ProtocolSample:
    """One (bag, t0) sample of the protocol and its outcome."""

    bag: str
    t0_offset_s: float | None  # clip time of the sample (None: not a protocol tick)
    status: str
    t0: float | None = None  # the plan's t0 (bag clock)
    min_ade: float | None = None
    baselines: dict[str, float] = field(default_factory=dict)  # name -> ADE (K = 1)
    reason: str = ""


def protocol_samples(bag: str, records: Sequence[TickRecord], scores: Sequence[TickScore],
                     t0_offsets_s: Sequence[float | None]) -> list[ProtocolSample]:
    """Pair each protocol tick of one bag with its score (records and offsets in tick order)."""
    by_t0 = {s.t0: s for s in scores}
    out = []
    for rec, off in zip(records, t0_offsets_s, strict=False):
        s = by_t0.get(rec.t0) if rec.xyz is not None else None  # a skipped tick has no plan of its own
        status = "scored" if s is not None else (rec.status if rec.status != "planned" else "no_ground_truth")
        out.append(ProtocolSample(bag, off, status, rec.t0, s.min_ade if s else None,
                                  {k: m.min_ade for k, m in s.baselines.items()} if s else {}, rec.reason))
    return out


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def protocol_summary(protocol: Protocol, samples: Sequence[ProtocolSample], deviations: Sequence[str] = (),
                     t0_policy: str = "exact") -> dict[str, Any]:
    """The protocol's number: the mean of per-sample minADE over the samples that were scored,
    with the baselines' ADE over the same samples and the failed samples listed."""
    scored = [s for s in samples if s.min_ade is not None]
    names = sorted({k for s in scored for k in s.baselines})
    return {
        "protocol": protocol.describe() | {"t0_policy": t0_policy},
        "faithful": not deviations,
        "deviations": list(deviations),
        "metric": protocol.metric,
        "value": _mean([s.min_ade for s in scored if s.min_ade is not None]),
        "samples_scored": len(scored),
        "samples_total": len(samples),
        "baselines": {n: _mean([s.baselines[n] for s in scored if n in s.baselines]) for n in names},
        "failed": [{"bag": s.bag, "t0_offset_s": s.t0_offset_s, "status": s.status, "reason": s.reason}
                   for s in samples if s.min_ade is None],
        "samples": [{"bag": s.bag, "t0_offset_s": s.t0_offset_s, "t0": s.t0, "min_ade": s.min_ade,
                     "baselines": s.baselines} for s in scored],
    }
