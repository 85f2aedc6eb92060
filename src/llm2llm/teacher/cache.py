"""The teacher's cache of replies (SQLite, one commit per reply) and its budget (tokens and/or money)."""
from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from urllib.parse import quote

from .. import UserError
from ..config import TeacherConfig


def _key(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Cache:
    """key -> reply, in SQLite: each reply is committed as it arrives, so a crash loses none.

    `made` counts how often a call with that key was made: anything above 1 is a call paid twice. Commits go
    to a write-ahead log without an fsync each (WAL, synchronous=NORMAL): a killed process loses no committed
    reply, a power cut may lose the last few (asked again on resume), and the event loop that commits each
    reply as it arrives is not held up by the disk (an fsync per reply held up every call in flight).
    """

    def __init__(self, path: Path):
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
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


def _uri(path: Path, mode: str) -> str:
    return f"file:{quote(str(Path(path).resolve()))}?mode={mode}"


def take_replies(source: Path, target: Path) -> None:
    """Another run's cached replies into this run's cache (those it lacks; the other cache, its write-ahead log
    included, is only read): the same requests then read them instead of asking again. Idempotent."""
    Cache(target).close()  # the table, where the cache is new
    db = sqlite3.connect(_uri(target, "rw"), uri=True)
    try:
        db.execute("ATTACH DATABASE ? AS other", (_uri(source, "ro"),))
        db.execute("INSERT OR IGNORE INTO calls (key, reply, made) SELECT key, reply, made FROM other.calls")
        db.commit()
    except sqlite3.DatabaseError as err:
        raise UserError(f"{source}: cannot read its teacher replies ({err})") from None
    finally:
        db.close()


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


def price(table: dict | None, prompt: int, completion: int) -> float:
    """What tokens cost at a price table of {"prompt": ..., "completion": ...} per million (teacher.price_per_million);
    0 without one."""
    table = table or {}
    return (prompt * table.get("prompt", 0) + completion * table.get("completion", 0)) / 1e6


class Budget:
    """The run's cap on teacher spending, in tokens and/or money. A call starts only when what has been
    spent, plus the most that the calls in flight and this one may cost, stays within the cap."""

    def __init__(self, cfg: TeacherConfig):
        self.cfg, self.tokens, self.cost = cfg, 0, 0.0  # spent; earlier spending comes in through settle()
        self.held = (0, 0)  # (prompt, completion) tokens reserved by calls in flight
        self.refused = 0

    def price(self, prompt: int, completion: int) -> float:
        return price(self.cfg.price_per_million, prompt, completion)

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

