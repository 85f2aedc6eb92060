"""The student's evaluation on llama.cpp (CPU), behind the same contract as `student.predict`: one answer text per
example, from exactly the training prompt's tokens, greedy, cut at the task's stop strings.

For a GGUF student fine-tuned with LoRA (student.engine: llamacpp). Each iteration's adapter (the PEFT directory
training wrote) is converted once to a GGUF adapter by llama.cpp's own convert_lora_to_gguf.py (from the sources
llama-server is built from), and llama-server serves the student's GGUF file with it, answering several prompts
at once in its parallel slots. The base weights are the GGUF's quantized ones, which transformers de-quantized for
training; llama.cpp rounds the activations in its matrix products, so a long greedy answer can drift from
transformers' (benchmarks/eval_llamacpp.py, 2 cores, the GSM8K student: 1.87x faster, the same number on 32 of 48
problems, 11 right against 10). Generative tasks only (math, free text): scoring choices needs the prompt's
log-probabilities, which llama-server does not return.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from . import UserError, display, llamacpp
from .config import StudentConfig
from .student import cut_at_stop, resolve_model, shorten

SLOTS = 8  # prompts decoded together, in llama-server's parallel slots


def check(cfg: StudentConfig, task) -> Path:
    """The student's GGUF file, once the config is one this engine can evaluate (else a one-line error)."""
    where, gguf = resolve_model(cfg.model, cfg.gguf_file)
    if not gguf:
        raise UserError("student.engine llamacpp: the student must be a GGUF file or a named GGUF model "
                        f"(student.model '{cfg.model}' is not)")
    if cfg.finetune != "lora":
        raise UserError("student.engine llamacpp: needs student.finetune lora (the adapter is served on the GGUF)")
    if task.mode == "choices":
        raise UserError("student.engine llamacpp: generative tasks only (math, custom); this task scores choices, "
                        "which stays on transformers")
    return Path(where) / gguf


def adapter_gguf(model_dir: Path, base_config: dict) -> Path:
    """model_dir/adapter.gguf: the PEFT adapter in model_dir as a llama.cpp LoRA adapter (f32), made once.
    base_config: the base model's config.json (its hyperparameters; the converter reads no weights)."""
    out = model_dir / "adapter.gguf"
    if out.exists():
        return out
    script = llamacpp.sources() / "convert_lora_to_gguf.py"
    with tempfile.TemporaryDirectory() as base:
        Path(base, "config.json").write_text(json.dumps(base_config))
        done = subprocess.run([sys.executable, str(script), "--base", base, "--outtype", "f32",
                               "--outfile", str(out.with_suffix(".part")), str(model_dir)],
                              capture_output=True, text=True)
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
        raise UserError(f"{model_dir}: converting the adapter for llama.cpp failed: {' '.join(tail)[:300]}")
    out.with_suffix(".part").replace(out)
    return out


def completion(base_url: str, ids: list[int], max_new_tokens: int, stop: list[str]) -> str:
    """One greedy completion of the prompt's token ids from llama-server's /completion."""
    body = {"prompt": ids, "n_predict": max_new_tokens, "temperature": 0.0, "stop": stop, "cache_prompt": False}
    request = urllib.request.Request(base_url.removesuffix("/v1") + "/completion", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=3600) as reply:
        return json.loads(reply.read())["content"]


class LlamaCppStudent:
    def __init__(self, cfg: StudentConfig, task, base, tokenizer, slots: int = SLOTS):
        self.gguf = check(cfg, task)
        self.cfg, self.tokenizer, self.slots = cfg, tokenizer, slots
        self.base_config = {**base.config.to_dict(), "architectures": [type(base).__name__]}

    def predict(self, task, examples: list[dict], model_dir: Path, iteration: int,
                label: str = "evaluate") -> list[str]:
        if not examples:
            return []
        adapter = adapter_gguf(Path(model_dir), self.base_config)
        prompts = shorten(self.tokenizer, [task.student_prompt(ex) for ex in examples], self.cfg.max_length)
        ids = [self.tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
        stop = list(task.stop or [])
        context = max(map(len, ids)) + task.max_new_tokens + 8
        server_args = ["-t", str(os.cpu_count() or 2), "--lora", str(adapter)]
        log = Path(model_dir) / "llama-server.log"
        with llamacpp.serve(self.gguf, self.slots, context, server_args, log=log) as url, \
                display.counting(label, len(examples)) as advance, \
                concurrent.futures.ThreadPoolExecutor(self.slots) as pool:
            futures = [pool.submit(completion, url, x, task.max_new_tokens, stop) for x in ids]
            texts = []
            for future in futures:
                texts.append(cut_at_stop(future.result(), stop))
                advance(1)
        return texts
