import sqlite3

from llm2llm.config import TeacherConfig
from llm2llm.teacher import Cache, Teacher


class RecordingBackend:
    """Answers from a script; records which requests it was asked for (a fake for pure cache logic)."""

    def __init__(self, fail=()):
        self.asked, self.fail = [], set(fail)

    def complete(self, items, todo, params, done):
        for i, request, _ in items:
            if i not in todo:
                continue
            self.asked.append(request["messages"][0]["content"])
            if request["messages"][0]["content"] in self.fail:
                done(i, {"text": "", "error": "APIStatusError: 500", "prompt_tokens": 0, "completion_tokens": 0})
            else:
                done(i, {"text": "re: " + request["messages"][0]["content"], "prompt_tokens": 3, "completion_tokens": 2})


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
