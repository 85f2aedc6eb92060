"""The Teacher (requests in, replies out: the cache first, then the backend within the budget) and the ledger of
one stage: what it did (`Tally`), and the backend's side of it (`Calls`: start, retried, done)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

from .. import display
from ..config import TeacherConfig
from ..records import Reply, Request
from .cache import Budget, Cache, _key, most_tokens


class Job(NamedTuple):
    """One call a backend is asked to make: the request's index in the stage, the request, its cache key."""
    index: int
    request: dict
    key: str


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
        self.replies[i] = {**reply, "status": "failed" if "error" in reply else "ok", "cached": False}
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

    def complete(self, requests: list[Request], label: str = "teacher", **overrides) -> list[Reply | None]:
        """One reply per request ({messages, iteration, sample, and optionally the JSON `schema` the reply must
        match}); `overrides` replace generation parameters (the judge asks with temperature 0)."""
        params = {**self.params, **overrides}
        keys = [self.key(r, params) for r in requests]
        replies: list[dict | None] = [self.cache.get(k) for k in keys]
        self.tally = Tally(requests=len(requests))
        for reply in replies:
            if reply is not None:  # paid for earlier in this run: it counts against the budget
                reply.update(status="ok", cached=True)
                self.tally.cached += 1
                if self.budget is not None:
                    self.budget.settle(None, reply)
        todo = {i for i, r in enumerate(replies) if r is None}
        if todo:
            with display.stage_progress(label) as progress:
                bar = progress.add_task("teacher", total=len(todo), stats="")
                calls = Calls(self, keys, requests, replies, params, progress, bar)
                items = [Job(i, request, key) for i, (request, key) in enumerate(zip(requests, keys))]
                self.backend.complete(items, todo, params, calls)
                self.tally.seconds = time.time() - calls.t0
        return replies
