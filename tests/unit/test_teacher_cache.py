import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from llm2llm.config import TeacherConfig
from llm2llm.teacher import Budget, Cache, Teacher, retry_after


class RecordingBackend:
    """Answers from a script; records which requests it was asked for (a fake for pure cache logic)."""

    def __init__(self, fail=()):
        self.asked, self.fail = [], set(fail)

    def complete(self, items, todo, params, calls):
        for i, request, _ in items:
            if i not in todo or not calls.start(i):
                continue
            text = request["messages"][0]["content"]
            self.asked.append(text)
            if text in self.fail:
                calls.done(i, {"text": "", "error": "APIStatusError: 500", "prompt_tokens": 0, "completion_tokens": 0})
            else:
                calls.done(i, {"text": "re: " + text, "prompt_tokens": 30, "completion_tokens": 20})


def req(text, iteration=0, sample=0):
    return {"messages": [{"role": "user", "content": text}], "iteration": iteration, "sample": sample}


def test_cache_makes_no_call_twice_and_retries_failures(tmp_path):
    cfg = TeacherConfig()
    backend = RecordingBackend(fail={"b"})
    first = Teacher(cfg, Cache(tmp_path / "c.sqlite"), backend).complete([req("a"), req("b"), req("c")])
    assert [r["text"] for r in first] == ["re: a", "", "re: c"] and first[1]["error"]
    assert backend.asked == ["a", "b", "c"]

    backend2 = RecordingBackend()
    second = Teacher(cfg, Cache(tmp_path / "c.sqlite"), backend2).complete([req("a"), req("b"), req("c")])
    assert backend2.asked == ["b"]  # only the failed one is asked again
    assert [r["cached"] for r in second] == [True, False, True] and second[1]["text"] == "re: b"
    made = dict(sqlite3.connect(tmp_path / "c.sqlite").execute("SELECT reply, made FROM calls").fetchall())
    assert sorted(made.values()) == [1, 1, 1]


def test_key_depends_on_iteration_sample_and_params(tmp_path):
    teacher = Teacher(TeacherConfig(), Cache(tmp_path / "c.sqlite"), RecordingBackend())
    keys = {teacher.key(req("a")), teacher.key(req("a", iteration=1)), teacher.key(req("a", sample=1))}
    assert len(keys) == 3
    hotter = Teacher(TeacherConfig(temperature=1.0), Cache(tmp_path / "c.sqlite"), RecordingBackend())
    assert hotter.key(req("a")) != teacher.key(req("a"))


def test_budget_stops_generation_and_counts_cached_replies(tmp_path):
    cfg = TeacherConfig(max_tokens=20, budget_tokens=200)
    cache = Cache(tmp_path / "c.sqlite")
    backend = RecordingBackend()
    teacher = Teacher(cfg, cache, backend, Budget(cfg))
    replies = teacher.complete([req(t) for t in "abcdef"])
    # each call reserves the most it can cost before it starts (1 byte + 16 + 64 prompt tokens, 20 completion
    # tokens: 101) and costs 50: a, then b (50 + 101 <= 200); c would need 100 + 101
    assert backend.asked == ["a", "b"] and replies[2:] == [None] * 4
    assert teacher.tally.skipped == 4 and teacher.budget.tokens == 100 and teacher.budget.refused
    # a resumed stage: the cached replies count against a fresh budget too, so nothing new is asked
    again = Teacher(cfg, cache, RecordingBackend(), Budget(cfg))
    assert again.complete([req(t) for t in "abcdef"])[:2] == [dict(r, cached=True) for r in replies[:2]]
    assert again.backend.asked == [] and again.budget.tokens == 100
    # money: 50 tokens at 1000 per million = 0.05 each; a call reserves 101 tokens' worth (0.101)
    priced = TeacherConfig(max_tokens=20, price_per_million={"prompt": 1000, "completion": 1000}, budget_cost=0.12)
    teacher = Teacher(priced, Cache(tmp_path / "d.sqlite"), RecordingBackend(), Budget(priced))
    teacher.complete([req(t) for t in "abcdef"])
    assert teacher.backend.asked == ["a"] and teacher.budget.cost == pytest.approx(0.05)


class ConcurrentBackend:
    """Starts every call the budget allows before any returns (all in flight at once, as with a large
    `concurrency`), then answers them in a random order, each with a server's own token count: the template's
    20 to 40 tokens plus a quarter to all of the message's bytes (a fake for pure budget logic)."""

    def __init__(self, rng):
        self.rng, self.made = rng, 0

    def complete(self, items, todo, params, calls):
        started = [(i, request) for i, request, _ in items if i in todo and calls.start(i)]
        self.rng.shuffle(started)
        for i, request in started:
            size = sum(len(m["content"].encode()) for m in request["messages"])
            calls.done(i, {"text": "x", "prompt_tokens": self.rng.randint(20 + size // 4, 40 + size),
                           "completion_tokens": self.rng.randint(1, params["max_tokens"])})
            self.made += 1


def test_budget_cap_holds_when_every_call_is_in_flight_at_once(tmp_path):
    """Whatever the prompts (ASCII or not, short or long) and the order replies come back in, the tokens and
    money spent never exceed the cap, though every allowed call starts before any has returned."""
    import random

    rng = random.Random(0)
    words = ["a", "wake me at six", "réveille-moi à six heures", "六時に起こして", "🙂 play jazz", "x" * 300]
    for trial in range(200):
        requests = [req(" ".join(rng.choices(words, k=rng.randint(1, 4))), sample=j) for j in range(rng.randint(1, 12))]
        price = {"prompt": 1000, "completion": 3000}
        cfg = TeacherConfig(max_tokens=rng.choice([8, 20, 64]), budget_tokens=rng.randint(100, 3000),
                            price_per_million=price, budget_cost=rng.choice([None, rng.uniform(0.1, 3.0)]))
        backend = ConcurrentBackend(rng)
        teacher = Teacher(cfg, Cache(tmp_path / f"{trial}.sqlite"), backend, Budget(cfg))
        replies = teacher.complete(requests)
        spent = sum(r["prompt_tokens"] + r["completion_tokens"] for r in replies if r)
        assert spent <= cfg.budget_tokens, (trial, spent, cfg.budget_tokens, backend.made)
        if cfg.budget_cost is not None:
            assert teacher.budget.cost <= cfg.budget_cost, (trial, teacher.budget.cost, cfg.budget_cost)
        assert teacher.tally.made == backend.made == sum(r is not None for r in replies)


def test_budget_counts_with_the_local_teachers_tokenizer(tmp_path):
    class Tokenizer:  # stands for a chat template and tokenizer: 5 tokens of template, one per word
        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "<s> <user> " + " ".join(m["content"] for m in messages) + " </user> <assistant>"

        def __call__(self, text, add_special_tokens):
            return type("Encoding", (), {"input_ids": text.split()})()

    backend = RecordingBackend()
    backend.tokenizer = Tokenizer()
    teacher = Teacher(TeacherConfig(), Cache(tmp_path / "c.sqlite"), backend)
    assert teacher.most_tokens(req("wake me at six"), 20) == (4 + 4, 20)
    backend.tokenizer = None  # a server: a bound from the bytes
    assert teacher.most_tokens(req("wake me at six"), 20) == (14 + 16 + 64, 20)


def test_budget_cost_needs_a_price():
    from llm2llm.config import build_config

    with pytest.raises(Exception, match="price_per_million"):
        build_config({"task": {"type": "classification"}, "data": {"train": "x", "test": "y"},
                      "teacher": {"budget_cost": 1.0}})


def test_retry_after_reads_seconds_milliseconds_and_dates():
    class Err(Exception):  # the shape of openai's APIStatusError: .response.headers
        def __init__(self, headers):
            self.response = type("Response", (), {"headers": headers})()

    assert retry_after(Err({"retry-after": "2"})) == 2.0
    assert retry_after(Err({"retry-after-ms": "1500"})) == 1.5
    assert 0 < retry_after(Err({"retry-after": time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                               time.gmtime(time.time() + 30))})) <= 31
    assert retry_after(Err({})) == 0.0 and retry_after(ValueError()) == 0.0 and retry_after(Err({"retry-after": "x"})) == 0


def test_cache_survives_a_kill_in_the_middle_of_writes(tmp_path):
    """A process writing replies as fast as it can is killed; the cache opens, passes SQLite's integrity
    check, and holds every reply committed before the kill, whole."""
    path = tmp_path / "c.sqlite"
    code = ("import sys; from llm2llm.teacher import Cache; c = Cache(sys.argv[1]); i = 0\n"
            "while True:\n    c.put(str(i), {'text': 'x' * 5000, 'n': i}); i += 1\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)])
    deadline = time.time() + 30
    while time.time() < deadline and sum(p.stat().st_size for p in tmp_path.glob("c.sqlite*")) < 200_000:  # db + log
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cache = Cache(path)
    n = db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert n > 10 and all(cache.get(str(i)) == {"text": "x" * 5000, "n": i} for i in range(n))


def test_cache_commits_each_reply_without_an_fsync(tmp_path):
    """Each reply is committed as it arrives, on the event loop that has every other call in flight: with
    SQLite's default rollback journal each commit waited for ~4 fsyncs (~20 ms here), which held the hosted
    teacher benchmark to 0.66 of its ideal. A write-ahead log with synchronous=NORMAL commits without an fsync
    and, as the kill test above checks, still keeps every committed reply when the process dies."""
    cache = Cache(tmp_path / "c.sqlite")
    assert cache.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert cache.db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: the log is synced at checkpoints
    cache.put("k", {"text": "x"})
    cache.close()
    assert Cache(tmp_path / "c.sqlite").get("k") == {"text": "x"}  # reopened (the log checkpointed on close)
