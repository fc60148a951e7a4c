"""benchmarks/bench_gpu.py stays runnable without a GPU: its CPU dry run, its release-size model
directory and its roofline (no GPU here: the figures themselves come from a GPU machine)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_release_model_dir_has_the_real_dims_and_vocabulary(bench, tmp_path: Path) -> None:
    from alpamayo_ros.core.tokenizer import AlpamayoTokenizer
    from alpamayo_ros.runtime.config import load_config
    from alpamayo_ros.runtime.tensorrt.budget import param_counts

    model_dir = bench.release_model_dir(tmp_path / "r1")
    cfg = load_config(model_dir)
    p = param_counts(cfg)
    assert (cfg.text.num_hidden_layers, cfg.text.hidden_size, cfg.text.vocab_size) == (36, 4096, 155_697)
    assert round(p.text_engine / 1e9, 3) == 8.222 and round(p.expert / 1e9, 2) == 2.28
    tok = AlpamayoTokenizer.from_file(model_dir / "tokenizer.json", traj_vocab_size=cfg.layout.traj_vocab_size)
    assert tok.layout.vocab_size == cfg.text.vocab_size  # what GraphBackend checks
    assert bench.gpu_rates("NVIDIA H200", None, None) == (4.8e12, 989e12)
    assert bench.gpu_rates("NVIDIA H100 80GB HBM3 SXM", None, None) == (3.35e12, 989e12)
    assert bench.gpu_rates("Some GPU", 1000, 100) == (1e12, 1e14) and bench.gpu_rates("Some GPU", None, None) is None


@pytest.mark.slow
def test_dry_run_runs_the_shared_orchestration_on_the_device_executor(bench, tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    assert bench.main(["--dry-run", "--ticks", "0", "--candidates", "2", "--max-gen", "4", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["ticks"]
    assert row["images_encoded"] == 16 and row["decode_steps"] == 4 and row["prompt_tokens"] > 2880
    assert all(row[k] > 0 for k in ("vision_ms", "prefill_ms", "decode_step_ms", "euler_step_ms", "tick_ms"))


def test_roofline_at_the_release_dims(bench, tmp_path: Path) -> None:
    model_dir = bench.release_model_dir(tmp_path / "r1")
    summary = {"prompt_tokens": 3086, "decode_steps": 20}
    h200 = bench.roofline(model_dir, summary, 6, bench.GPUS["H200"], "H200")
    thor = bench.roofline(model_dir, summary, 6, bench.GPUS["Thor"], "Thor")
    assert thor["decode_step_ms"] == pytest.approx(58.1, abs=0.2)  # docs/deployment/jetson_thor.md §8
    assert h200["decode_step_ms"] == pytest.approx(58.1 * 273e9 / 4.8e12, rel=0.01)  # bandwidth-bound
    assert h200["tick_ms"] < thor["tick_ms"] / 10
