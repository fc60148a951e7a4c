"""The tiny model: deterministic from a seed, released file layout, committed copy up to date."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from alpamayo_ros.core.tokenizer import AlpamayoTokenizer
from alpamayo_ros.runtime.tiny_model import default_tiny_model_dir, main, make_tiny_model

FILES = ("config.json", "model.safetensors", "tokenizer.json", "token_layout.json")


def _digest(d: Path) -> dict[str, str]:
    return {f: hashlib.sha256((d / f).read_bytes()).hexdigest() for f in FILES}


def test_same_seed_same_bytes_other_seed_other_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    again = make_tiny_model(tmp_path / "a", seed=0)
    other = make_tiny_model(tmp_path / "b", seed=1)
    assert _digest(again) == _digest(tiny_model_dir)
    assert _digest(other)["model.safetensors"] != _digest(again)["model.safetensors"]


def test_committed_resource_is_the_seed0_model(tiny_model_dir: Path) -> None:
    assert _digest(default_tiny_model_dir()) == _digest(tiny_model_dir), (
        "alpamayo_ros/resources/tiny_model is stale: regenerate with `python -m alpamayo_ros.runtime.tiny_model --resource`"
    )
    assert sum((default_tiny_model_dir() / f).stat().st_size for f in FILES) < 5_000_000


def test_layout_has_the_alpamayo_extension(tiny_model_dir: Path) -> None:
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    tok = AlpamayoTokenizer.from_file(tiny_model_dir / "tokenizer.json")
    lay = tok.layout
    assert cfg["traj_vocab_size"] == 4000 and lay.traj_vocab_size == 4000
    assert cfg["vocab_size"] == lay.vocab_size == lay.base_vocab_size + 4000 + 28
    assert tok.token_to_id("<i0>") == cfg["traj_token_start_idx"] and tok.token_to_id("<i3999>") == lay.traj_token_end_idx - 1
    assert tok.token_to_id("<|traj_future_start|>") == lay.traj_future_start
    assert cfg["image_grid_thw"] == [1, 20, 36]


def test_cli(tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path / "m"), "--seed", "3"]) == 0
    assert "wrote tiny model" in capsys.readouterr().out
    assert all((tmp_path / "m" / f).is_file() for f in FILES)
