"""The OpenAI-protocol teacher: any OpenAI-compatible chat-completions server, called concurrently, with retries,
rate limits and redacted errors."""
from __future__ import annotations

import asyncio
import email.utils
import os
import re
import time

from .. import UserError
from ..config import TeacherConfig
from .cache import estimate_tokens
from .core import Calls


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
