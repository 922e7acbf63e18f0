"""What only the GPU machine runs, exercised on the CPU: the encoder's fp16 dtype mix, the language model's
CUDA-graph capture and replay (over a CPU stand-in for CUDA graphs), both capture fallbacks (the CPU's own "no
CUDA" failure stands in for a capture a GPU refuses), and preprocessing where ``AutoImageProcessor`` needs a
missing torchvision (transformers 5.1x)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from oracle import paper_select, reference_embeds, reference_scores

from hiprune.api import ExportRequest, export
from hiprune.config import HiPruneConfig
from hiprune.runtime import cuda_graph
from hiprune.runtime.encoders import TorchEncoderRunner
from hiprune.runtime.llm.hf import HfLLM
from hiprune.runtime.llm.loading import load_language_model
from hiprune.runtime.preprocess import PROCESSOR_CONFIG, load_image_processor, preprocess


@pytest.fixture(scope="module")
def pruned(tiny_vlm, tmp_path_factory):
    path = tiny_vlm(image_size=48)
    out = tmp_path_factory.mktemp("pruned") / "a"
    return path, export(ExportRequest(hiprune=HiPruneConfig(keep=10, alpha=0.5), model=str(path), output=out))


def _pixels(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, 48, 48, generator=torch.Generator().manual_seed(seed))


def test_fp16_encoder_keeps_the_oracle_tokens(pruned, reference_model):
    """The CUDA encoder's arithmetic (fp16 weights under fp16 autocast) on the CPU: the oracle's indices exactly,
    fp16 embeddings within fp16 rounding of the oracle's."""
    path, result = pruned
    h = result.manifest["hiprune"]
    model, pixel_values = reference_model(path), _pixels()
    with torch.no_grad():
        s_obj, s_deep, hidden = reference_scores(model, pixel_values, h["object_layer"], h["deep_layer"])
        indices = paper_select(s_obj, s_deep, h["keep"], h["alpha"], 6, "paper")
        want = reference_embeds(model, pixel_values, indices, model.config.vision_feature_layer, hidden)
    with TorchEncoderRunner(result.manifest, "cpu", cuda_graph=False, fp16=True) as runner:
        embeds, got = runner.infer_torch(pixel_values)
        assert embeds.dtype == torch.float16 and next(runner._encoder.parameters()).dtype == torch.float16
    np.testing.assert_array_equal(got.numpy(), np.asarray(indices))
    assert (embeds.float() - want).abs().max() <= 1e-2 * want.abs().max()


def test_encoder_capture_failure_runs_the_same_forward_eager(pruned):
    _, result = pruned
    runner = TorchEncoderRunner(result.manifest, "cpu")
    runner.cuda_graph = True  # the CUDA branch; capture fails here
    with runner, TorchEncoderRunner(result.manifest, "cpu") as eager:
        got, want = runner.infer_torch(_pixels(1)), eager.infer_torch(_pixels(1))
        assert runner.note is not None and runner.note.startswith("encoder CUDA graph capture failed")
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_encoder_graph_replays_what_eager_computes(pruned, monkeypatch):
    """The encoder's capture (a static input buffer, fp16 under autocast) over the CPU stand-in for CUDA graphs
    (tests/graph_replay.py): each replay gives the eager forward's indices and embeddings for its own image."""
    from graph_replay import RecordedGraph

    monkeypatch.setattr(cuda_graph, "CudaGraph", RecordedGraph)
    _, result = pruned
    graphed = TorchEncoderRunner(result.manifest, "cpu", fp16=True)
    graphed.cuda_graph = True  # the CUDA branch, captured and replayed by the stand-in
    with graphed, TorchEncoderRunner(result.manifest, "cpu", cuda_graph=False, fp16=True) as eager:
        assert isinstance(graphed._graph, RecordedGraph) and graphed.note is None
        for seed in (3, 4, 3):
            (got, got_idx), (want, want_idx) = graphed.infer_torch(_pixels(seed)), eager.infer_torch(_pixels(seed))
            assert torch.equal(got_idx, want_idx) and torch.equal(got, want)
        assert not torch.equal(graphed.infer_torch(_pixels(4))[1], got_idx)  # the images keep different tokens


def test_llm_capture_failure_falls_back_to_the_static_path(pruned):
    """A failed capture leaves the runtime on the eager static path: same ids and first logits as dynamic."""
    path, result = pruned
    lm, _ = load_language_model(str(path), result.output, None, "cpu", "float32")
    embeds = torch.randn(1, 12, lm.model.config.hidden_size, generator=torch.Generator().manual_seed(2))
    dynamic = HfLLM(lm, "cpu", static=False)
    want = dynamic.prefill(embeds)
    want_logits, want_ids = want.logits.clone(), dynamic.decode(want, 6)
    graphs = HfLLM(lm, "cpu", static=True, max_cache_len=32)
    graphs.cuda_graphs = True  # the CUDA branch; capture fails here
    got = graphs.prefill(embeds)
    assert not graphs.cuda_graphs and graphs.note.startswith("language model CUDA graph capture failed")
    assert (got.logits - want_logits).abs().max() <= 1e-4
    assert graphs.decode(got, 6) == want_ids and len(want_ids) > 1


def test_processor_when_auto_image_processor_needs_torchvision(pruned, photo, tmp_path, monkeypatch):
    """transformers 5.1x's AutoImageProcessor raises ImportError without torchvision: the PIL class of the processor
    the config names (a checkpoint's ``CLIPImageProcessor``, torchvision-backed) loads, with the saved settings."""
    import transformers

    _, result = pruned
    config = json.loads((result.output / PROCESSOR_CONFIG).read_text())
    (tmp_path / PROCESSOR_CONFIG).write_text(json.dumps({**config, "image_processor_type": "CLIPImageProcessor"}))

    def needs_torchvision(*args, **kwargs):
        raise ImportError("AutoImageProcessor requires the Torchvision library but it was not found")

    monkeypatch.setattr(transformers.AutoImageProcessor, "from_pretrained", needs_torchvision)
    processor = load_image_processor(tmp_path, None)
    assert type(processor) is transformers.CLIPImageProcessorPil and processor.crop_size["height"] == 48
    want = transformers.CLIPImageProcessorPil.from_pretrained(str(result.output), local_files_only=True)
    image = photo(64, seed=4)
    np.testing.assert_array_equal(preprocess(processor, image, (1, 3, 48, 48)), preprocess(want, image, (1, 3, 48, 48)))


def test_graph_capture_and_replay_give_the_dynamic_ids(pruned, monkeypatch):
    """The CUDA-graph path's own logic (what runs at capture and what at replay: the cache counter's reset, the id
    and position buffers, one prefill graph per prompt length, one decode graph) over a CPU stand-in for CUDA
    graphs (tests/graph_replay.py): the dynamic cache's ids and first logits, prompt after prompt."""
    from graph_replay import RecordedGraph

    monkeypatch.setattr(cuda_graph, "CudaGraph", RecordedGraph)
    path, result = pruned
    lm, _ = load_language_model(str(path), result.output, None, "cpu", "float32")
    dynamic = HfLLM(lm, "cpu", static=False)
    graphs = HfLLM(lm, "cpu", static=True, max_cache_len=40)
    graphs.cuda_graphs = True  # the CUDA branch, captured and replayed by the stand-in
    generator = torch.Generator().manual_seed(3)
    prompts = [torch.randn(1, n, lm.model.config.hidden_size, generator=generator) for n in (12, 7)]
    for embeds in (*prompts, prompts[0]):  # the third prompt replays the first one's graph
        want = dynamic.prefill(embeds)
        want_logits, want_ids = want.logits.clone(), dynamic.decode(want, 6)
        got = graphs.prefill(embeds)
        assert (got.logits - want_logits).abs().max() <= 1e-4
        assert graphs.decode(got, 6) == want_ids and len(want_ids) > 1
        cached = embeds.shape[1] + len(want_ids) - 1  # every token fed so far, at its own position
        assert (_kv(graphs._buffers["cache"].layers, cached) - _kv(want.state.layers, cached)).abs().max() <= 1e-4
    assert graphs.note is None and graphs.cuda_graphs and sorted(graphs._prefill_graphs) == [7, 12]


def _kv(layers, length: int) -> torch.Tensor:
    return torch.cat([t[:, :, :length] for layer in layers for t in (layer.keys, layer.values)])


def test_chain_in_the_cuda_configuration_generates_the_fp32_ids(pruned, photo, monkeypatch):
    """The chain as CUDA runs it (fp16 encoder under autocast and fp16 language model, static cache, both
    captured and replayed by the CPU stand-in for CUDA graphs) generates what the fp32 eager chain does."""
    from graph_replay import RecordedGraph

    from hiprune.runtime import encoders
    from hiprune.runtime.chain import Chain

    _, result = pruned
    image = photo(64, seed=5)
    with Chain(result.output, encoder="torch") as reference:
        want = reference.run(image, "What is it?", 8).generated_ids
    monkeypatch.setattr(cuda_graph, "CudaGraph", RecordedGraph)
    runner_init, llm_init = encoders.TorchEncoderRunner.__init__, HfLLM.__init__

    def cuda_runner(self, manifest, device="cpu", cuda_graph=True, fp16=None):
        runner_init(self, manifest, device, cuda_graph, fp16=True)
        self.cuda_graph = True

    def cuda_llm(self, *args, **kwargs):
        llm_init(self, *args, **kwargs)
        self.cuda_graphs = True

    monkeypatch.setattr(encoders.TorchEncoderRunner, "__init__", cuda_runner)
    monkeypatch.setattr(HfLLM, "__init__", cuda_llm)
    options = {"dtype": "float16", "static": True, "max_cache_len": 128}
    with Chain(result.output, encoder="torch", runtime_options=options) as chain:
        got = [chain.run(image, "What is it?", 8).generated_ids for _ in range(2)]
        assert isinstance(chain.runner._graph, RecordedGraph) and list(chain.runtime._prefill_graphs)
        assert chain.runtime.model.dtype == torch.float16 and chain.runner.note is None is chain.runtime.note
    assert got == [want, want] and len(want) > 1
