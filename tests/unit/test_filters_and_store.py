import pytest

from llm2llm import UserError
from llm2llm.config import TaskConfig
from llm2llm.filters import keep, synthetic_id
from llm2llm.store import RunStore
from llm2llm.tasks import make_task


def test_keep_accepts_rejects_with_reasons_and_lineage():
    task = make_task(TaskConfig(type="classification"), [{"text": "x", "label": "alarm"}, {"text": "y", "label": "music"}])
    parent = {"id": "s1", "text": "wake me at six", "label": "alarm"}
    known = [parent, {"id": "s2", "text": "set an alarm", "label": "alarm"}]
    test = [{"id": "t1", "text": "alarm at noon", "label": "alarm"}]
    replies = ["Here is one: get me up at 5", "get me up at 5", "Set an ALARM", "alarm at noon", "", "wake me at six"]
    calls = [{"parent": parent, "sample": i, "reply": {"text": t}} for i, t in enumerate(replies)]
    calls.append({"parent": parent, "sample": 9, "reply": {"text": "", "error": "APITimeoutError: slow"}})
    accepted, rejected = keep(task, calls, known, test, iteration=1, teacher_model="T")
    assert accepted == [{"id": synthetic_id({"text": "get me up at 5", "label": "alarm"}, "s1"), "text": "get me up at 5",
                         "label": "alarm", "origin": "teacher", "parent_id": "s1", "iteration": 1, "teacher_model": "T"}]
    assert [r["reason"] for r in rejected] == [
        "duplicate of an existing example", "duplicate of an existing example", "copy of a test example",
        "empty reply", "copy of its parent", "teacher call failed: APITimeoutError: slow"]
    assert len(accepted) + len(rejected) == len(calls)  # nothing is dropped silently


def test_synthetic_ids_come_from_content():
    a = synthetic_id({"text": "x", "label": "y"}, "p")
    assert a == synthetic_id({"label": "y", "text": "x"}, "p") and a != synthetic_id({"text": "x", "label": "y"}, "q")


def test_store_roundtrip_and_config_guard(tmp_path):
    store = RunStore(tmp_path / "run")
    assert store.open({"a": 1, "b": {"c": 2}}) is False
    store.write_jsonl(0, "train.jsonl", [{"id": "1"}, {"id": "2", "t": "é"}])
    assert store.read_jsonl(0, "train.jsonl") == [{"id": "1"}, {"id": "2", "t": "é"}]
    assert not list((tmp_path / "run" / "iter_000").glob(".*tmp"))
    store.write_metrics({"iteration": 1, "x": 1})
    store.write_metrics({"iteration": 0, "x": 0})
    store.write_metrics({"iteration": 1, "x": 2})
    assert store.metrics() == [{"iteration": 0, "x": 0}, {"iteration": 1, "x": 2}]
    assert RunStore(tmp_path / "run").open({"a": 1, "b": {"c": 2}}) is True
    with pytest.raises(UserError, match=r"different config \(b.c\)"):
        RunStore(tmp_path / "run").open({"a": 1, "b": {"c": 3}})


def test_store_refuses_foreign_dir(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an llm2llm run dir"):
        RunStore(tmp_path).open({"a": 1})
    assert (tmp_path / "mine.txt").read_text() == "keep me"
