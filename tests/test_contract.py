"""The I/O contract: the manifest records it, and a runner given it holds an artifact's outputs to it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hiprune.api import ExportRequest, export
from hiprune.config import HiPruneConfig
from hiprune.contract import IOContract
from hiprune.errors import HiPruneError
from hiprune.runtime import OrtRunner


def test_runner_holds_outputs_to_the_contract(tiny_checkpoint, tmp_path):
    request = ExportRequest(hiprune=HiPruneConfig(keep=5), model=str(tiny_checkpoint()), batch=2, output=tmp_path)
    result = export(request)
    io = IOContract.from_manifest(result.manifest)
    assert (io.batch, io.image_size, io.kept, io.num_tokens, io.embed_dim) == (2, (32, 32), 5, 16, 48)
    pixel_values = np.zeros(io.pixel_values.shape, np.float32)
    with OrtRunner(result.artifact, contract=io) as runner:
        assert set(runner.infer(io.feed(pixel_values))) == {info.name for info in io.outputs}
    wrong = dataclasses.replace(io, kept=6, indices_dtype="int32")
    with OrtRunner(result.artifact, contract=wrong) as runner:
        with pytest.raises(HiPruneError, match=r"output 'image_embeds' is float32\[2, 5, 48\]; .* float32\[2, 6, 48\]"):
            runner.infer(io.feed(pixel_values))
