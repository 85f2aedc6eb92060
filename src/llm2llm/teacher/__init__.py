"""The teacher: turns chat requests into replies, with an on-disk cache in front of every backend.

Backends, one file each: `local` (an in-process transformers model), `openai` (any OpenAI-compatible server:
OpenAI, vLLM, SGLang, Ollama, llama.cpp) and `llamacpp` (a GGUF model on a llama-server of ours). A request is
(messages, iteration, sample index); the cache key is the model, the messages, the generation parameters, the
iteration and the sample index, so a rerun or resume of a finished generation makes no call at all. A budget is
checked before each call starts; a tally of what the stage did (calls, retries, failures, tokens) is shown live
and returned.
"""
from __future__ import annotations

from ..config import TeacherConfig
from .cache import Budget, Cache, estimate_tokens, most_tokens, price
from .core import Calls, Job, Tally, Teacher
from .llamacpp_backend import LlamaCppBackend, gguf_file
from .local_backend import JsonSchemaProcessor, LocalBackend
from .openai_backend import BadReply, OpenAIBackend, redact, retry_after

__all__ = ["Budget", "Cache", "estimate_tokens", "most_tokens", "price", "Calls", "Job", "Tally", "Teacher", "LlamaCppBackend",
           "gguf_file", "JsonSchemaProcessor", "LocalBackend", "BadReply", "OpenAIBackend", "redact", "retry_after",
           "make_backend"]


def make_backend(cfg: TeacherConfig, shared: dict | None = None):
    """The configured backend. `shared` maps a model spec to an already loaded (model, tokenizer)."""
    if cfg.backend == "llamacpp":
        return LlamaCppBackend(cfg)
    if cfg.backend == "openai":
        backend = OpenAIBackend(cfg)
        backend.preflight()
        return backend
    from .. import student

    loaded = (shared or {}).get((cfg.model, cfg.gguf_file))
    model, tokenizer = loaded or student.load(cfg.model, cfg.gguf_file)
    return LocalBackend(model, tokenizer, cfg.batch_size, cfg.response_format != "none")
