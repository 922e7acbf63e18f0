"""Language-model runtimes for the chain: ``transformers`` (default), ``onnxruntime``, ``llama.cpp``; one interface."""

from hiprune.runtime.llm.base import RUNTIMES, STAGES, LanguageModel, LLMRuntime, Prefill, Timings, get_llm_runtime

__all__ = ["RUNTIMES", "STAGES", "LanguageModel", "LLMRuntime", "Prefill", "Timings", "get_llm_runtime"]
