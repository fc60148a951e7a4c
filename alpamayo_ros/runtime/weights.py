"""Load / save Alpamayo-R1 weights in the released safetensors layout (spec §8).

The released checkpoint is `model.safetensors` or `model-0000i-of-0000n.safetensors` shards with
`model.safetensors.index.json`. Loading is strict: every missing or unexpected key and every shape
mismatch is reported in one error.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alpamayo_ros.core.action_space import NORMALIZATION_KEYS, ActionSpaceConfig, Normalization

if TYPE_CHECKING:
    import torch

    from alpamayo_ros.runtime.modeling.model import AlpamayoR1

MAX_LISTED = 20
ACTION_SPACE_KEYS = tuple(f"action_space.{k}" for k in NORMALIZATION_KEYS)
FOURIER_FREQ_KEYS = ("action_in_proj.sinus.0.freqs", "action_in_proj.sinus.1.freqs",
                     "action_in_proj.timestep_fourier_encoder.freqs")
# safetensors dtype -> numpy dtype; BF16 is widened to float32 by hand (numpy has no bfloat16)
_NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}


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


def optional_weights_fingerprint(model_dir: str | Path) -> str | None:
    """``weights_fingerprint`` when the directory holds weights (engines/ONNX may travel without them)."""
    try:
        return weights_fingerprint(model_dir)
    except FileNotFoundError:
        return None


def _safetensors_header(path: Path) -> tuple[dict[str, Any], int]:
    with path.open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(size)), 8 + size


def read_small_tensors(model_dir: str | Path, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The named tensors (those present) as float arrays, read from the safetensors files without torch.

    Only the headers and the named tensors' bytes are read, so this is cheap on a 22 GB checkpoint.
    """
    wanted, out = set(names), {}
    for path in weight_files(model_dir):
        header, data_start = _safetensors_header(path)
        for name in wanted & set(header):
            entry = header[name]
            if entry["dtype"] not in _NUMPY_DTYPES:
                raise CheckpointError(f"{path}: tensor {name} has dtype {entry['dtype']}, expected a float type")
            begin, end = entry["data_offsets"]
            with path.open("rb") as fh:
                fh.seek(data_start + begin)
                raw = np.frombuffer(fh.read(end - begin), dtype=np.dtype(_NUMPY_DTYPES[entry["dtype"]]).newbyteorder("<"))
            if entry["dtype"] == "BF16":
                raw = (raw.astype(np.uint32) << 16).view(np.float32)
            out[name] = raw.astype(np.float64).reshape(entry["shape"])
    return out


def checkpoint_normalization(model_dir: str | Path) -> Normalization | None:
    """The weights' ``action_space.*`` buffers (AR1 stores them, bf16), or None when there are no weights
    or the weights do not hold them (Alpamayo 1.5 rebuilds them from config.json)."""
    try:
        tensors = read_small_tensors(model_dir, ACTION_SPACE_KEYS)
    except FileNotFoundError:
        return None
    if set(tensors) != set(ACTION_SPACE_KEYS):
        return None
    values = [float(tensors[k].reshape(-1)[0]) for k in ACTION_SPACE_KEYS]
    return Normalization(*values, source="checkpoint")


def config_normalization(raw_config: Mapping[str, Any]) -> Normalization:
    """config.json's constants rounded to bf16, as the released checkpoint stores them (spec §6.1)."""
    return ActionSpaceConfig.from_model_config(raw_config).bf16_rounded().normalization("config_bf16")


def resolve_normalization(model_dir: str | Path, recorded: Normalization | None = None) -> Normalization:
    """The constants a backend's actions are normalised with: the checkpoint's buffers, else what the
    ONNX / engine manifest recorded at export (a model directory without weights), else config.json
    rounded to bf16."""
    from alpamayo_ros.core.model_config import load_model_dir_config

    held = checkpoint_normalization(model_dir)
    if held is not None:
        return held
    if recorded is not None:
        return recorded
    return config_normalization(load_model_dir_config(model_dir))


def checkpoint_layout(model_dir: str | Path) -> dict[str, tuple[tuple[int, ...], str, Path]]:
    """Key -> (shape, safetensors dtype, file) of every stored tensor, from the headers only (no data read)."""
    layout: dict[str, tuple[tuple[int, ...], str, Path]] = {}
    for path in weight_files(model_dir):
        header, _ = _safetensors_header(path)
        for key, entry in header.items():
            if key != "__metadata__":
                layout[key] = (tuple(entry["shape"]), entry["dtype"], path)
    return layout


class TensorReader:
    """One tensor at a time from the checkpoint's safetensors files (memory-mapped reads)."""

    def __init__(self, layout: Mapping[str, tuple[tuple[int, ...], str, Path]]) -> None:
        self.layout = layout
        self._open: dict[Path, Any] = {}

    def get(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        path = self.layout[key][2]
        if path not in self._open:
            self._open[path] = safe_open(str(path), framework="pt")
        return self._open[path].get_tensor(key)


def read_state_dict(model_dir: str | Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in weight_files(model_dir):
        state.update(load_file(str(f)))
    return state


def _listing(title: str, items: list[str]) -> str:
    more = f" … and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{title} ({len(items)}): " + ", ".join(items[:MAX_LISTED]) + more


def check_state_dict(model: AlpamayoR1, state: Mapping[str, Any], source: str = "checkpoint") -> None:
    """Every key and shape of `state` (tensors, or shapes) against the model's; one error listing all problems."""
    from alpamayo_ros.runtime.modeling.model import state_shapes

    found = {k: tuple(v) if isinstance(v, tuple) else tuple(v.shape) for k, v in state.items()}
    check_layout(state_shapes(model), found, source)


def check_layout(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]], source: str) -> None:
    """Missing / unexpected keys and shape mismatches (a tensor of another shape with the same number of
    elements, like the Fourier `freqs` as `[n]` or `[1, n]`, loads)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{k}: checkpoint {found[k]} vs model {expected[k]}"
        for k in sorted(set(found) & set(expected))
        if found[k] != expected[k] and _numel(found[k]) != _numel(expected[k])
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


def _numel(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


def load_weights(model: AlpamayoR1, model_dir: str | Path, dtype: torch.dtype | None = None,
                 device: str | torch.device = "cpu") -> None:
    """Load the model directory's safetensors into `model` strictly, one tensor at a time (peak memory: the
    model in `dtype`, default fp32, plus one tensor). Works on a model built by `empty_model` (meta
    parameters). Tensors stored in another shape with the same elements load too (the Fourier ``freqs``
    as ``[n]`` or as the released ``[1, n]``); the buffers Alpamayo 1.5 does not store are rebuilt."""
    import torch

    from alpamayo_ros.runtime.modeling.model import materialize, state_shapes

    layout = checkpoint_layout(model_dir)
    rebuilt = rebuilt_buffers(model, set(layout), model_dir)
    found = {k: shape for k, (shape, _, _) in layout.items()}
    check_layout(state_shapes(model), {**found, **{k: tuple(v.shape) for k, v in rebuilt.items()}},
                 source=f"weights in {model_dir}")
    reader, target = TensorReader(layout), dtype or torch.float32

    def load(key: str, current: torch.Tensor) -> torch.Tensor:
        value = rebuilt[key] if key in rebuilt else reader.get(key)
        return value.to(device=device, dtype=target).reshape(current.shape)

    materialize(model, load)
    model.to(device)  # the non-persistent constants


def rebuilt_buffers(model: AlpamayoR1, stored: set[str], model_dir: str | Path) -> dict[str, torch.Tensor]:
    """Alpamayo 1.5 does not store the action_space and Fourier buffers (non-persistent, rebuilt from
    config.json): when a whole group is absent, its values rounded to bf16, as the model holds them at run time."""
    import torch

    from alpamayo_ros.core.model_config import load_model_dir_config
    from alpamayo_ros.runtime.modeling.action_projection import fourier_freqs

    keys = model.state_dict(keep_vars=True)
    out: dict[str, torch.Tensor] = {}
    if not any(k in stored for k in ACTION_SPACE_KEYS):
        values = config_normalization(load_model_dir_config(model_dir)).values()
        out.update({f"action_space.{k}": torch.tensor(v, dtype=torch.float32) for k, v in values.items()})
    freqs = [k for k in keys if k.startswith("action_in_proj.") and k.endswith(".freqs")]
    if freqs and not any(k in stored for k in freqs):
        aip = model.config.action_in_proj
        value = fourier_freqs(aip.num_fourier_feats, aip.max_freq).to(torch.bfloat16).to(torch.float32)[None, :]
        out.update({k: value.clone() for k in freqs})
    return out


def save_weights(model: AlpamayoR1, model_dir: str | Path, max_shard_bytes: int | None = None,
                 skip: tuple[str, ...] = ()) -> list[Path]:
    """Write model.safetensors (or shards + index when max_shard_bytes is given), without the ``skip`` keys."""
    from safetensors.torch import save_file

    root = Path(model_dir)
    root.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k not in skip}
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


def load_model(model_dir: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
               **config_overrides: object) -> AlpamayoR1:
    """Build AlpamayoR1 from `<model_dir>/config.json` and load its weights (eval mode, fp32 by default),
    tensor by tensor: the host never holds the checkpoint and the model at once."""
    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.modeling.model import empty_model

    cfg = load_config(model_dir, **config_overrides)
    weight_files(model_dir)  # fail on missing files before building anything
    model = empty_model(cfg)
    load_weights(model, model_dir, dtype, device)
    return model
