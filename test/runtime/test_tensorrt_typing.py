"""Static typing of the TensorRT builder and executor against the TensorRT 10.13 Python API.

TensorRT cannot be imported here, so the check is mypy against `tensorrt-stubs` 10.13.0.35.1
(requirements/tensorrt-stubs.txt). That package is not usable as shipped: CRLF files without
`py.typed`, parameters named `in` (a syntax error), a non-default parameter after defaults,
`bool` shadowed by `trt.bool`, re-exports mypy does not accept, and an import of `tensorrt_libs`.
`sanitize_stubs` fixes exactly those, mechanically, into a temporary MYPYPATH. A probe file with
known API misuse proves the stubs are really in force (an `Any` module would pass everything).
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "alpamayo_ros" / "runtime" / "tensorrt"

PROBE = """
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    import tensorrt as trt

def misuse(engine: "trt.ICudaEngine", context: "trt.IExecutionContext") -> None:
    context.set_tensor_address("x")          # probe:1 missing the address
    engine.get_tensor_shape(3)               # probe:2 name must be str
    context.execute_async_v4(0)              # probe:3 no such method
"""

MYPY_INI = """
[mypy]
python_version = 3.11
follow_imports = silent
ignore_missing_imports = True
check_untyped_defs = True
warn_unused_ignores = False
[mypy-alpamayo_ros.runtime.tensorrt.*]
disallow_untyped_defs = True
[mypy-tensorrt.*,tensorrt_bindings.*]
ignore_errors = True
"""


def _find_stubs() -> Path:
    for root in {sysconfig.get_paths()["purelib"], *sys.path}:
        if (Path(root) / "tensorrt" / "__init__.pyi").is_file() and (
            Path(root) / "tensorrt_bindings"
        ).is_dir():
            return Path(root)
    pytest.fail("tensorrt-stubs is not installed: `pip install --no-deps -r requirements/tensorrt-stubs.txt`")


def sanitize_stubs(site: Path, out: Path) -> None:
    for package in ("tensorrt", "tensorrt_bindings"):
        for stub in (site / package).glob("*.pyi"):
            text = stub.read_text().replace("\r\n", "\n")
            text = re.sub(
                r"^from (tensorrt_bindings[\w.]*) import (\w+)$", r"from \1 import \2 as \2", text, flags=re.M
            )
            text = re.sub(r"^import tensorrt_libs as tensorrt_libs$", "", text, flags=re.M)
            text = re.sub(r"([(,] *)in: ", r"\1in_: ", text)
            text = text.replace(
                "channel_axis: int) -> IScaleLayer", "channel_axis: int = ...) -> IScaleLayer"
            )
            text = re.sub(r"^bool: DataType.*$", "", text, flags=re.M)
            (out / package).mkdir(parents=True, exist_ok=True)
            (out / package / stub.name).write_text(text)


@pytest.mark.slow
def test_tensorrt_code_type_checks_against_tensorrt_stubs(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    stubs = tmp_path / "stubs"
    sanitize_stubs(_find_stubs(), stubs)
    (tmp_path / "mypy.ini").write_text(MYPY_INI)
    probe = tmp_path / "probe_misuse.py"
    probe.write_text(PROBE)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(tmp_path / "mypy.ini"), "--cache-dir", str(tmp_path / "cache"),
         "--show-error-codes", "--no-pretty", str(PACKAGE), str(probe)],
        cwd=REPO, env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    lines = [line for line in result.stdout.splitlines() if ": error:" in line]
    ours = [line for line in lines if "probe_misuse.py" not in line]
    assert not ours, "mypy errors in alpamayo_ros/runtime/tensorrt:\n" + "\n".join(ours)
    probe_lines = {int(line.split(":")[1]) for line in lines if "probe_misuse.py" in line}
    expected = {i + 1 for i, text in enumerate(PROBE.splitlines()) if "# probe:" in text}
    assert probe_lines == expected, f"stubs not in force? mypy output:\n{result.stdout}\n{result.stderr}"
