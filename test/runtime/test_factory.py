"""create_backend: names, lazy imports, clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from alpamayo_ros.runtime import create_backend


def test_unknown_backend_and_missing_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'foo'.*torch"):
        (tmp_path / "config.json").write_text("{}")
        create_backend("foo", tmp_path)
    with pytest.raises(FileNotFoundError, match="config.json not found.*make-tiny-model"):
        create_backend("torch", tmp_path / "nothing")


def test_tensorrt_without_gpu_fails_naming_tensorrt(tiny_model_dir: Path) -> None:
    try:
        from cuda.bindings import runtime

        if runtime.cudaGetDeviceCount()[0] == 0:
            pytest.skip("a CUDA device is present")
    except Exception:
        pass
    with pytest.raises(Exception, match="(?i)tensorrt|cuda"):
        create_backend("tensorrt", tiny_model_dir)


def test_unknown_option_is_rejected(tiny_model_dir: Path) -> None:
    with pytest.raises(TypeError, match="unknown options.*num_thread"):
        create_backend("torch", tiny_model_dir, num_thread=2)


def test_importing_runtime_is_light() -> None:
    code = ("import sys, alpamayo_ros.runtime; "
            "bad = [m for m in ('torch', 'onnxruntime', 'tensorrt') if m in sys.modules]; sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2]).returncode == 0


def test_onnxruntime_worker_threads_block_instead_of_spinning_by_default(tiny_model_dir: Path, tiny_onnx_dir: Path
                                                                          ) -> None:
    # Spinning intra-op threads busy-wait between kernels; on a planner host they take CPU from the image
    # workers and the executor thread (docs/benchmarks.md, "Runtime against this machine's floor").
    def spinning(**options) -> set[str]:
        backend = create_backend("onnxruntime", tiny_model_dir, **options)
        try:
            return {s.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
                    for s in backend.orchestrator.executor.sessions.values()}
        finally:
            backend.close()

    assert spinning() == {"0"}
    assert spinning(spin_threads=True) == {"1"}
