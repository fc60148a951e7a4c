"""Load / save Alpamayo-R1 weights in the released safetensors layout (spec §8).

The released checkpoint is `model.safetensors` or `model-0000i-of-0000n.safetensors` shards with
`model.safetensors.index.json`. Loading is strict: every missing or unexpected key and every shape
mismatch is reported in one error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from alpamayo_ros.runtime.modeling.model import AlpamayoR1

MAX_LISTED = 20


class CheckpointError(RuntimeError):
    """The checkpoint does not match the model built from config.json."""


def weight_files(model_dir: str | Path) -> list[Path]:
    root = Path(model_dir)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [root / n for n in names]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"{index} names shards that do not exist: {missing}")
        return files
    single = root / "model.safetensors"
    if single.is_file():
        return [single]
    shards = sorted(root.glob("model-*-of-*.safetensors"))
    if shards:
        return shards
    raise FileNotFoundError(
        f"no weights in {root}: expected model.safetensors or model-*-of-*.safetensors "
        f"(+ model.safetensors.index.json); make a tiny model with `python -m alpamayo_ros.runtime.tiny_model {root}`"
    )


def weights_fingerprint(model_dir: str | Path, chunk: int = 1 << 20) -> str:
    """Cheap identity of the weight files (name, size, first and last MiB), so that stale exports are caught."""
    import hashlib

    h = hashlib.sha256()
    for f in weight_files(model_dir):
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(chunk))
            fh.seek(max(0, size - chunk))
            h.update(fh.read(chunk))
    return h.hexdigest()[:16]


def read_state_dict(model_dir: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in weight_files(model_dir):
        state.update(load_file(str(f)))
    return state


def _listing(title: str, items: list[str]) -> str:
    more = f" … and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{title} ({len(items)}): " + ", ".join(items[:MAX_LISTED]) + more


def check_state_dict(model: AlpamayoR1, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape) and state[k].numel() != expected[k].numel()
    ]
    problems = []
    if missing:
        problems.append(_listing("missing keys", missing))
    if unexpected:
        problems.append(_listing("unexpected keys", unexpected))
    if mismatched:
        problems.append(_listing("shape mismatches", mismatched))
    if problems:
        raise CheckpointError(
            f"{source} does not match the model built from config.json:\n  "
            + "\n  ".join(problems)
            + "\nFix: use the config.json that belongs to these weights (dims), or re-export the checkpoint "
            "with the released key layout (vlm.model.visual.*, vlm.model.language_model.*, vlm.lm_head.weight, "
            "expert.*, action_in_proj.*, action_out_proj.*, action_space.*)."
        )


def load_weights(model: AlpamayoR1, model_dir: str | Path) -> None:
    """Load the model directory's safetensors into `model` (fp32), strictly."""
    import torch

    state = read_state_dict(model_dir)
    check_state_dict(model, state, source=f"weights in {model_dir}")
    expected = model.state_dict()
    fixed = {k: v.to(torch.float32).reshape(expected[k].shape) for k, v in state.items()}
    model.load_state_dict(fixed, strict=True)


def save_weights(model: AlpamayoR1, model_dir: str | Path, max_shard_bytes: int | None = None) -> list[Path]:
    """Write model.safetensors (or shards + index when max_shard_bytes is given)."""
    from safetensors.torch import save_file

    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if max_shard_bytes is None:
        path = root / "model.safetensors"
        save_file(state, str(path), metadata={"format": "pt"})
        return [path]
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k in sorted(state):
        nbytes = state[k].numel() * state[k].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = state[k]
        size += nbytes
    n = len(shards)
    paths, weight_map = [], {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{n:05d}.safetensors"
        save_file(shard, str(root / name), metadata={"format": "pt"})
        paths.append(root / name)
        weight_map.update({k: name for k in shard})
    (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))
    return paths


def load_model(model_dir: str | Path, **config_overrides: object) -> AlpamayoR1:
    """Build AlpamayoR1 from `<model_dir>/config.json` and load its weights (eval mode, fp32)."""
    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.modeling.model import AlpamayoR1

    cfg = load_config(model_dir, **config_overrides)
    weight_files(model_dir)  # fail on missing files before allocating the model
    model = AlpamayoR1(cfg)
    load_weights(model, model_dir)
    return model.eval()
