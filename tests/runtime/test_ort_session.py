"""ONNX Runtime sessions: all opened by one factory; one process-wide thread pool when asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

_OPEN_TWO = """
import os, sys
import numpy as np
from hiprune.runtime import ort_session
from hiprune.runtime.runners import OrtRunner
if sys.argv[2] == "shared":
    ort_session.share_cpu_threads()
threads = lambda: len(os.listdir("/proc/self/task"))
before = threads()
feed = {"x": np.arange(64, dtype=np.float32).reshape(8, 8)}
with OrtRunner(sys.argv[1]) as first:
    second = ort_session.open_session(sys.argv[1], ["CPUExecutionProvider"])
    grown = threads() - before
    a, b = first.infer(feed)["y"], second.run(["y"], feed)[0]
print(grown, float(a.sum()), float(b.sum()), ort_session.threads_shared())
"""


@pytest.fixture(scope="module")
def matmul_model(tmp_path_factory):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.eye(8, dtype=np.float32) * 2.0, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 8])], [weight],
    )  # fmt: skip
    path = tmp_path_factory.mktemp("ort") / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _open_two(model: Path, mode: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_TWO, str(model), mode], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return done.stdout.split()


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through /proc (Linux)")
def test_shared_sessions_use_one_pool_and_compute_the_same(matmul_model):
    grown_own, *sums_own, shared_own = _open_two(matmul_model, "own")
    grown_shared, *sums_shared, shared = _open_two(matmul_model, "shared")
    expected = str(float(np.arange(64).sum() * 2))
    assert sums_own == sums_shared == [expected, expected]
    assert (shared_own, shared) == ("False", "True")
    if int(grown_own) == 0:
        pytest.skip("ONNX Runtime starts no worker threads on a single physical core")
    # two sessions with pools of their own start workers for each; on the shared pool the second starts none
    assert int(grown_shared) < int(grown_own), (grown_shared, grown_own)


def test_every_session_is_opened_by_the_factory():
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "hiprune").rglob("*.py")
        if "InferenceSession(" in path.read_text() and path.name != "ort_session.py"
    ]
    assert not offenders, f"open ONNX Runtime sessions with hiprune.runtime.ort_session.open_session: {offenders}"
