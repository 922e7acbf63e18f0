"""Language-model runtimes for the chain: ``transformers`` (default) and ``onnxruntime``, one interface."""

from hiprune.runtime.llm.base import RUNTIMES, STAGES, LanguageModel, LLMRuntime, Prefill, Timings, get_llm_runtime

__all__ = ["RUNTIMES", "STAGES", "LanguageModel", "LLMRuntime", "Prefill", "Timings", "get_llm_runtime"]
