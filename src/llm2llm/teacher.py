"""The teacher: turns chat requests into replies, with an on-disk cache in front of every backend.

Backends: `local` (an in-process transformers model) and `openai` (any OpenAI-compatible server:
OpenAI, vLLM, SGLang, Ollama, llama.cpp). A request is (messages, iteration, sample index); the cache key is
the model, the messages, the generation parameters, the iteration and the sample index, so a rerun or resume of a
finished generation makes no call at all.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
from pathlib import Path

from rich.progress import Progress

from . import UserError
from .config import TeacherConfig


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Cache:
    """key -> reply, in SQLite: each reply is committed as it arrives, so a crash loses none.

    `made` counts how often a call with that key was made: anything above 1 is a call paid twice.
    """

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE TABLE IF NOT EXISTS calls "
                        "(key TEXT PRIMARY KEY, reply TEXT NOT NULL, made INTEGER NOT NULL DEFAULT 1)")
        self.db.commit()

    def get(self, key: str) -> dict | None:
        row = self.db.execute("SELECT reply FROM calls WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, reply: dict) -> None:
        self.db.execute("INSERT INTO calls (key, reply) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET reply = excluded.reply, made = made + 1",
                        (key, json.dumps(reply)))
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class Teacher:
    """complete(requests) -> replies; a reply is {text, prompt_tokens, completion_tokens, cached}."""

    def __init__(self, cfg: TeacherConfig, cache: Cache, backend):
        self.cfg, self.cache, self.backend = cfg, cache, backend
        self.params = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}

    @property
    def model_name(self) -> str:
        return self.cfg.model

    def key(self, request: dict) -> str:
        """The call's identity; the iteration is part of it so that each round asks anew."""
        return _key({"model": self.cfg.model, "backend": self.cfg.backend, "messages": request["messages"],
                     "params": self.params, "sample": [request["iteration"], request["sample"]]})

    def complete(self, requests: list[dict]) -> list[dict]:
        keys = [self.key(r) for r in requests]
        replies: list[dict | None] = [self.cache.get(k) for k in keys]
        for reply in replies:
            if reply is not None:
                reply["cached"] = True
        todo = {i for i, r in enumerate(replies) if r is None}
        if todo:
            with Progress(transient=True) as progress:
                bar = progress.add_task("teacher", total=len(todo))

                def done(i: int, reply: dict) -> None:
                    if "error" not in reply:  # failed calls are reported, not cached: a rerun retries them
                        self.cache.put(keys[i], reply)
                    replies[i] = {**reply, "cached": False}
                    progress.advance(bar)

                items = [(i, request, key) for i, (request, key) in enumerate(zip(requests, keys))]
                self.backend.complete(items, todo, self.params, done)
        return replies


class LocalBackend:
    """Generate in-process with a transformers model (shared with the student when it is the same)."""

    def __init__(self, model, tokenizer, batch_size: int):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size

    def complete(self, items, todo: set[int], params, done) -> None:
        """Batches are made over all requests, cached or not, and a batch with anything missing is
        generated whole: each reply then comes from the same batch, and so the same sampled text,
        however often the stage was interrupted."""
        import torch

        tok = self.tokenizer
        prompts = [tok.apply_chat_template(req["messages"], tokenize=False, add_generation_prompt=True)
                   for _, req, _ in items]
        order = sorted(range(len(items)), key=lambda j: len(prompts[j]))
        tok.padding_side = "left"
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            if not any(items[j][0] in todo for j in chunk):
                continue
            batch = tok([prompts[j] for j in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            # seeded by the requests' own keys: the same batch always samples the same text
            torch.manual_seed(int(items[chunk[0]][2][:8], 16))
            sample = params["temperature"] > 0
            with torch.inference_mode():
                out = self.model.generate(
                    **batch, max_new_tokens=params["max_tokens"], do_sample=sample,
                    temperature=params["temperature"] if sample else None,
                    top_p=params["top_p"] if sample else None, top_k=None,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            width = batch["input_ids"].shape[1]
            for row, j in enumerate(chunk):
                if items[j][0] not in todo:
                    continue
                new = out[row, width:]
                new = new[new != tok.pad_token_id]
                done(items[j][0], {"text": tok.decode(new, skip_special_tokens=True),
                                   "prompt_tokens": int(batch["attention_mask"][row].sum()),
                                   "completion_tokens": int(len(new))})


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions server, called concurrently with the official client.

    The client retries 429, 5xx, timeouts and connection errors with exponential backoff and honours
    Retry-After; the key is read from the environment variable the config names, never stored.
    """

    def __init__(self, cfg: TeacherConfig):
        import openai

        self.cfg = cfg
        key = os.environ.get(cfg.api_key_env) or "not-needed"
        self.client = openai.AsyncOpenAI(base_url=cfg.base_url, api_key=key, timeout=cfg.timeout_s,
                                         max_retries=cfg.max_retries)
        self.openai = openai

    def preflight(self) -> None:
        """Fail before any training when the server is unreachable or refuses the key."""
        client = self.openai.OpenAI(base_url=self.cfg.base_url, api_key=self.client.api_key,
                                    timeout=min(self.cfg.timeout_s, 30), max_retries=1)
        try:
            client.models.list()
        except self.openai.AuthenticationError:
            raise UserError(f"teacher.base_url {self.cfg.base_url}: the server rejected the API key "
                            f"(from ${self.cfg.api_key_env})") from None
        except self.openai.APIConnectionError:
            raise UserError(f"teacher.base_url: cannot reach {self.cfg.base_url}") from None
        except self.openai.APIStatusError:
            pass  # some servers do not list models; the first real call will tell
        finally:
            client.close()

    def complete(self, items, todo: set[int], params, done) -> None:
        asyncio.run(self._complete_all([item for item in items if item[0] in todo], params, done))

    async def _complete_all(self, items, params, done) -> None:
        gate = asyncio.Semaphore(self.cfg.concurrency)

        async def one(i, request, key):
            async with gate:
                try:
                    reply = await self._call(request, params, seed=int(key[:8], 16))
                except self.openai.APIError as err:  # still failing after the client's retries
                    reply = {"text": "", "error": f"{type(err).__name__}: {str(err)[:200]}",
                             "prompt_tokens": 0, "completion_tokens": 0}
            done(i, reply)

        try:
            await asyncio.gather(*(one(*item) for item in items))
        finally:
            await self.client.close()

    async def _call(self, request, params, seed: int) -> dict:
        openai = self.openai
        try:
            out = await self.client.chat.completions.create(
                model=self.cfg.model, messages=request["messages"], seed=seed, **params)
        except openai.AuthenticationError:
            raise UserError(f"teacher.base_url {self.cfg.base_url}: the server rejected the API key "
                            f"(from ${self.cfg.api_key_env})") from None
        except openai.NotFoundError as err:
            raise UserError(f"teacher.model: the server at {self.cfg.base_url} says: {err.message}") from None
        except openai.APIConnectionError:
            raise UserError(f"teacher.base_url: cannot reach {self.cfg.base_url}") from None
        usage = out.usage
        return {"text": out.choices[0].message.content or "",
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else 0}



def make_backend(cfg: TeacherConfig, shared: dict | None = None):
    """The configured backend. `shared` maps a model spec to an already loaded (model, tokenizer)."""
    if cfg.backend == "openai":
        backend = OpenAIBackend(cfg)
        backend.preflight()
        return backend
    from . import student

    loaded = (shared or {}).get((cfg.model, cfg.gguf_file))
    model, tokenizer = loaded or student.load(cfg.model, cfg.gguf_file)
    return LocalBackend(model, tokenizer, cfg.batch_size)
