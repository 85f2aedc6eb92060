"""The student's evaluation on vLLM (GPU), behind the same contract as `student.predict`: one answer text per
example, from exactly the training prompt, greedy.

A LoRA student is served as the base model plus each iteration's adapter (a LoRARequest per iteration, no
merge, no reload); a fully fine-tuned one is loaded from its iteration's directory. Classification and choice
tasks score their candidates as `student.score_candidates` does, from vLLM's prompt log-probabilities of
prompt+candidate+EOS; generative tasks decode greedily with the task's max_new_tokens and stop strings.
Everything that needs no GPU (request building, candidate scoring) is plain functions, tested without vLLM.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from . import UserError
from .config import StudentConfig
from .student import resolve_model, shorten, tokenise_completions


def wanted(cfg: StudentConfig) -> bool:
    """Whether this run evaluates on vLLM: asked for, or `auto` with vLLM importable and a GPU present."""
    if cfg.engine in ("transformers", "llamacpp"):
        return False
    present = importlib.util.find_spec("vllm") is not None
    if cfg.engine == "vllm" and not present:
        raise UserError("student.engine: vllm is not installed (pip install 'llm2llm[vllm]' on a GPU machine)")
    if not present:
        return False
    import torch

    return cfg.engine == "vllm" or torch.cuda.is_available()


def candidate_requests(tokenizer, prompts: list[str], candidates: list[list[str]]) -> list[tuple[list[int], int]]:
    """(token ids of prompt+candidate+EOS, index of the first scored token) per candidate, prompt by prompt:
    tokenised as in training, the candidate starting where its ids depart from the prompt's."""
    return [(ids, max(1, start)) for prompt, cands in zip(prompts, candidates)
            for ids, start in tokenise_completions(tokenizer, prompt, cands)]


def best_candidates(requests: list[tuple[list[int], int]], prompt_logprobs: list[list], counts: list[int]) -> list[int]:
    """The index of the best candidate per prompt. prompt_logprobs[r][j] is vLLM's {token id: Logprob} (or a
    plain float) for position j of request r (None at position 0); the score sums the candidate's tokens."""
    scores = []
    for (ids, start), lps in zip(requests, prompt_logprobs):
        total = 0.0
        for j in range(start, len(ids)):
            entry = lps[j][ids[j]]
            total += getattr(entry, "logprob", entry)
        scores.append(total)
    best, at = [], 0
    for n in counts:
        group = scores[at:at + n]
        best.append(max(range(n), key=group.__getitem__))
        at += n
    return best


def sampling_params(task) -> dict:
    """vLLM SamplingParams fields for a generative task: greedy, the task's length and stop strings."""
    return {"temperature": 0.0, "max_tokens": task.max_new_tokens, "stop": list(task.stop or []) or None}


class VLLMStudent:
    def __init__(self, cfg: StudentConfig):
        from vllm import LLM

        where, gguf = resolve_model(cfg.model, cfg.gguf_file)
        if gguf:
            raise UserError("student.engine vllm: give the student as a Hugging Face id or directory, "
                            "not a GGUF file")
        self.cfg, self.base = cfg, where
        self.llm = LLM(model=where, enable_lora=cfg.finetune == "lora", max_lora_rank=max(cfg.lora_r, 8),
                       seed=cfg.seed, enable_prefix_caching=True, gpu_memory_utilization=cfg.vllm_gpu_memory)
        self.loaded = where

    def _target(self, model_dir: Path, iteration: int):
        """The LoRARequest for this iteration's adapter, or (full fine-tuning) the reloaded weights."""
        if self.cfg.finetune == "lora":
            from vllm.lora.request import LoRARequest

            return LoRARequest(f"iteration-{iteration}", iteration + 1, str(model_dir))
        if self.loaded != str(model_dir):
            from vllm import LLM

            del self.llm
            self.llm = LLM(model=str(model_dir), tokenizer=self.base, seed=self.cfg.seed, enable_prefix_caching=True,
                           gpu_memory_utilization=self.cfg.vllm_gpu_memory)
            self.loaded = str(model_dir)
        return None

    def predict(self, task, examples: list[dict], model_dir: Path, iteration: int, label: str = "") -> list[str]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not examples:
            return []
        lora = self._target(model_dir, iteration)
        tok = self.llm.get_tokenizer()
        prompts = shorten(tok, [task.student_prompt(ex) for ex in examples], self.cfg.max_length)
        if task.mode == "choices":
            cands = [task.candidates(ex) for ex in examples]
            requests = candidate_requests(tok, prompts, cands)
            outs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids, _ in requests],
                                     SamplingParams(max_tokens=1, prompt_logprobs=0), lora_request=lora,
                                     use_tqdm=False)
            best = best_candidates(requests, [o.prompt_logprobs for o in outs], [len(c) for c in cands])
            return [c[b] for c, b in zip(cands, best)]
        tokens = [TokensPrompt(prompt_token_ids=tok(p, add_special_tokens=False).input_ids) for p in prompts]
        outs = self.llm.generate(tokens, SamplingParams(**sampling_params(task)), lora_request=lora, use_tqdm=False)
        return [o.outputs[0].text for o in outs]
