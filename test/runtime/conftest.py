"""Shared runtime fixtures: one tiny model and one ONNX export per test session (export takes ~25 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from alpamayo_ros.runtime.tiny_model import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture(scope="session")
def tiny_onnx_dir(tiny_model_dir: Path) -> Path:
    from alpamayo_ros.runtime.export import export_onnx

    export_onnx(tiny_model_dir)
    return tiny_model_dir / "onnx"


@pytest.fixture(scope="session")
def synthetic(tiny_model_dir: Path):
    from alpamayo_ros.runtime.synthetic_inputs import SyntheticInputs

    return SyntheticInputs(tiny_model_dir)


@pytest.fixture(scope="session")
def torch_backend(tiny_model_dir: Path):
    from alpamayo_ros.runtime import create_backend

    backend = create_backend("torch", tiny_model_dir)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def ort_backend(tiny_model_dir: Path, tiny_onnx_dir: Path):
    from alpamayo_ros.runtime import create_backend

    backend = create_backend("onnxruntime", tiny_model_dir)
    yield backend
    backend.close()

