"""The openai teacher against a real OpenAI-compatible server (llama.cpp serving SmolLM2 on loopback),
directly and through a proxy of our own that injects faults."""
import json
from collections import Counter

import pytest
from typer.testing import CliRunner

from benchmarks.llama_server import free_port
from benchmarks.proxy import FAULTS, FaultProxy
from conftest import tiny_config
from llm2llm import UserError
from llm2llm.cli import app
from llm2llm.config import TaskConfig, TeacherConfig
from llm2llm.tasks import make_task
from llm2llm.teacher import Cache, OpenAIBackend, Teacher

pytestmark = pytest.mark.slow
KEY_ENV = "LLM2LLM_TEST_KEY"


def teacher_config(base_url, **extra) -> TeacherConfig:
    return TeacherConfig(**{"backend": "openai", "base_url": base_url, "model": "smollm2", "api_key_env": KEY_ENV,
                            "max_tokens": 16, "temperature": 0.7, "concurrency": 2, **extra})


def numbered_requests(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Write a short sentence about the number {i}."}],
             "iteration": 0, "sample": 0} for i in range(n)]


def test_openai_teacher_real_server(llama_server, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-key")
    cfg = teacher_config(llama_server, concurrency=4)
    backend = OpenAIBackend(cfg)
    backend.preflight()
    cache = Cache(tmp_path / "cache.sqlite")
    requests = numbered_requests(4)
    replies = Teacher(cfg, cache, backend).complete(requests)
    assert all(r["text"].strip() and r["completion_tokens"] > 0 and not r["cached"] for r in replies)
    again = Teacher(cfg, cache, OpenAIBackend(cfg))
    assert [r["text"] for r in again.complete(requests)] == [r["text"] for r in replies]
    assert again.tally.cached == 4 and again.tally.made == 0  # a rerun makes no call


def test_openai_teacher_bad_key_and_unreachable(llama_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    with pytest.raises(UserError, match="rejected the API key"):
        OpenAIBackend(teacher_config(llama_server)).preflight()
    with pytest.raises(UserError, match="cannot reach"):
        OpenAIBackend(teacher_config(f"http://127.0.0.1:{free_port()}/v1", max_retries=0)).preflight()


def test_faults_are_retried_and_counted_and_nothing_is_lost_or_doubled(llama_server, tmp_path, monkeypatch):
    """About 20% of calls get a 500, a 429 with Retry-After, a hang past the timeout, or a garbage body.
    Every fault is retried and counted, and the replies are those of a run without faults."""
    monkeypatch.setenv(KEY_ENV, "test-key")
    requests = numbered_requests(40)
    clean = Teacher(teacher_config(llama_server), Cache(tmp_path / "a.sqlite"), OpenAIBackend(teacher_config(llama_server)))
    expected = [r["text"] for r in clean.complete(requests)]

    with FaultProxy(llama_server.removesuffix("/v1"), fault_rate=0.2, hang_s=4, retry_after_s=1, seed=3) as proxy:
        cfg = teacher_config(proxy.url + "/v1", timeout_s=2.5, max_retries=8)
        cache = Cache(tmp_path / "b.sqlite")
        teacher = Teacher(cfg, cache, OpenAIBackend(cfg))
        replies = teacher.complete(requests)

    faults = proxy.faults()
    assert {f["fault"] for f in faults} == set(FAULTS), Counter(f["fault"] for f in faults)
    assert teacher.tally.retries == len(faults) and teacher.tally.failed == 0 and teacher.tally.made == 40
    assert [r["text"] for r in replies] == expected  # same seeds, same texts: nothing lost, swapped or doubled
    chat = [e for e in proxy.log if e["path"].endswith("/chat/completions")]
    delivered = Counter(e["digest"] for e in chat if not e["fault"])
    assert len(delivered) == 40 and set(delivered.values()) == {1}
    for fault in (f for f in faults if f["fault"] == "429"):  # the next try waited for Retry-After
        later = min(e["t"] for e in chat if e["digest"] == fault["digest"] and e["t"] > fault["t"])
        assert later - fault["t"] >= 1.0
    made = [m for (m,) in cache.db.execute("SELECT made FROM calls")]
    assert len(made) == 40 and set(made) == {1}


def test_loop_through_a_faulty_proxy_keeps_the_key_out(llama_server, tmp_path, intent_files, monkeypatch):
    """The whole loop with the teacher behind a flaky server: it completes, the retries are on record,
    and the API key appears nowhere on disk."""
    secret = "test-key"  # the key the fixture's server demands
    monkeypatch.setenv(KEY_ENV, secret)
    # timeout 30 s: far above what a real call takes even on a loaded 2-core machine, so that every retry on record
    # answers an injected fault (a hang outlasts it: 35 s), never a slow but healthy call
    with FaultProxy(llama_server.removesuffix("/v1"), fault_rate=0.2, hang_s=35, seed=5) as proxy:
        # 6 random parents x 2 samples: 12 teacher calls whatever the student gets wrong
        path = tiny_config(tmp_path, intent_files, loop={"augment": "random", "random_counts": [6]}, teacher={
            "backend": "openai", "base_url": proxy.url + "/v1", "model": "smollm2", "api_key_env": KEY_ENV,
            "response_format": "json_object", "timeout_s": 30, "max_retries": 8, "samples_per_example": 2,
            "concurrency": 2}, filters={"judge": "embedding"})  # no teacher judge's probe: every proxied call is the teacher stage's
        run_dir = tmp_path / "run"
        result = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    calls = [json.loads(x) for x in (run_dir / "iter_000" / "teacher_calls.jsonl").read_text().splitlines()]
    stats = json.loads((run_dir / "iter_000" / "teacher_stats.json").read_text())
    assert len(calls) == 12 == stats["made"] and all(c["reply"]["completion_tokens"] > 0 for c in calls)
    assert proxy.faults() and stats["retries"] == len(proxy.faults()) and stats["failed"] == 0
    assert secret not in result.output
    for file in run_dir.rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), file

    # a rejected key stops the run before anything is trained or written
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    path = tiny_config(tmp_path, intent_files, teacher={"backend": "openai", "base_url": llama_server,
                                                        "model": "smollm2", "api_key_env": KEY_ENV})
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run2")])
    assert result.exit_code == 2 and "rejected the API key" in result.output
    assert not (tmp_path / "run2").exists()


def test_budget_stops_the_run_cleanly_and_resume_goes_on(llama_server, tmp_path, intent_files, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "test-key")
    # random augmentation with fixed counts: 6 teacher calls per iteration, however the student does
    path = tiny_config(tmp_path, intent_files, loop={"iterations": 2, "augment": "random", "random_counts": [6, 6]},
                       teacher={"backend": "openai", "base_url": llama_server, "model": "smollm2",
                                "response_format": "json_object", "api_key_env": KEY_ENV, "budget_tokens": 700,
                                "concurrency": 1},
                       filters={"judge": "embedding"})  # no teacher judge: the budget goes to the teacher stage
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "teacher budget reached" in " ".join(result.output.split())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    spent = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
    assert 0 < spent <= 700 and rows[-1]["stopped"] == "budget" and len(rows) < 3
    calls = [json.loads(x) for r in rows if (run_dir / f"iter_{r['iteration']:03d}" / "teacher_calls.jsonl").exists()
             for x in (run_dir / f"iter_{r['iteration']:03d}" / "teacher_calls.jsonl").read_text().splitlines()]
    skipped = [c for c in calls if c["reply"]["status"] == "skipped"]
    assert skipped and sum(r.get("budget_skipped", 0) for r in rows) == len(skipped)
    assert sum(r["calls"] for r in rows) == len(calls) - len(skipped)

    # the same budget: resuming changes nothing; a raised one lets the run finish
    again = CliRunner().invoke(app, ["resume", str(run_dir)])
    assert again.exit_code == 0 and (run_dir / "metrics.jsonl").read_text().splitlines() == \
        [json.dumps(r) for r in rows]
    more = CliRunner().invoke(app, ["resume", str(run_dir), "--set", "teacher.budget_tokens=100000"])
    assert more.exit_code == 0, more.output
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2] and not any(r.get("stopped") for r in rows)


def schema_requests(n: int, per_call: int = 2) -> tuple[object, list[dict]]:
    task = make_task(TaskConfig(type="classification", description="the intent of a request"),
                     [{"text": "x", "label": "alarm"}, {"text": "y", "label": "weather"}])
    parent = {"id": "p", "text": "will it rain on saturday", "label": "weather"}
    shots = [{"id": "a", "text": "how cold is it outside", "label": "weather"}]
    return task, [{"messages": task.teacher_messages(parent, None, shots, per_call), "schema": task.reply_schema(parent, per_call),
                   "iteration": 0, "sample": i} for i in range(n)]


def test_structured_output_from_a_real_server(llama_server, tmp_path, monkeypatch):
    """The task's JSON schema sent as llama-cpp-python's `json_object` response format: every reply is JSON the
    schema allows. The OpenAI `json_schema` form, which this server refuses, stops with a one-line error."""
    monkeypatch.setenv(KEY_ENV, "test-key")
    task, requests = schema_requests(4)
    cfg = teacher_config(llama_server, max_tokens=200, response_format="json_object")
    replies = Teacher(cfg, Cache(tmp_path / "c.sqlite"), OpenAIBackend(cfg)).complete(requests)
    complete = [r for r in replies if r["completion_tokens"] < 200]
    assert len(complete) >= 3
    for reply in complete:
        value = json.loads(reply["text"])
        assert list(value) == ["examples"] and 1 <= len(value["examples"]) <= 2
        assert all(list(item) == ["text"] and len(item["text"]) >= 8 for item in value["examples"])
    cfg = teacher_config(llama_server, response_format="json_schema")
    with pytest.raises(UserError, match="teacher.response_format: the server .* does not accept 'json_schema'"):
        Teacher(cfg, Cache(tmp_path / "d.sqlite"), OpenAIBackend(cfg)).complete(requests[:1])
