"""The loop's body over built parts, end to end in a second: the student and the teacher are stand-ins."""
import io
import json

from rich.console import Console

from conftest import config_dict
from llm2llm import loop, student
from llm2llm.config import build_config
from llm2llm.store import RunStore
from llm2llm.teacher import Cache


class EchoBackend:
    """Writes one new example per call: the parent's text with a suffix, the parent's label."""

    def complete(self, items, todo, params, calls):
        for job in items:
            parent = job.request["parent"]
            if job.index in todo and calls.start(job.index):
                calls.done(job.index, {"text": json.dumps({"examples": [
                    {"text": f"{parent['text']} please, variant {job.request['sample']}", "label": parent["label"]}]}),
                    "prompt_tokens": 10, "completion_tokens": 5})


def stub_models(monkeypatch, closed):
    class RecordingCache(Cache):
        def close(self):
            closed.append(True)
            super().close()

    monkeypatch.setattr(student, "check_model", lambda *a: None)
    monkeypatch.setattr(student, "load", lambda *a: ("base", "tokenizer"))
    monkeypatch.setattr(student, "train", lambda start, tok, rows, cfg, out: (f"trained on {len(rows)}", {"steps": 1}))
    monkeypatch.setattr(student, "predict", lambda model, tok, task, examples, *a: [" alarm"] * len(examples))
    monkeypatch.setattr(loop, "make_backend", lambda cfg, shared=None: EchoBackend())
    monkeypatch.setattr(loop, "Cache", RecordingCache)


def test_the_loop_trains_evaluates_augments_and_records_each_iteration(tmp_path, intent_files, monkeypatch):
    closed = []
    stub_models(monkeypatch, closed)
    cfg = build_config(config_dict(*intent_files, loop={"iterations": 2}, filters={"judge": "none"},
                                   teacher={"samples_per_example": 2}))
    out = io.StringIO()
    rows = loop.run(cfg, RunStore(tmp_path / "run"), Console(file=out, width=80))

    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert [r["wrong"] for r in rows] == [4, 4, 4]  # the student always says "alarm": 2 of 6 seed examples right
    assert [r["calls"] for r in rows] == [8, 8, 0] and "generated" not in rows[0]  # 4 wrong x 2 samples
    assert [r["train_size"] for r in rows] == [6, 6 + rows[0]["accepted"], 6 + rows[0]["accepted"] + rows[1]["accepted"]]
    # the second sample of each parent is a near-duplicate of the first
    assert rows[0]["accepted"] == 4 and rows[0]["near_duplicates"] == 4
    assert rows[0]["prompt_tokens"] == 80 and rows[0]["completion_tokens"] == 40
    assert closed == [True]  # the teacher's cache is closed when the loop ends
    lines = out.getvalue().splitlines()
    assert [line[:line.rindex(",")] for line in lines if ": test acc" in line] == [
        "iteration 0: test acc 0.333, seed 0.333, 4 wrong, 8 calls, 4 kept",
        "iteration 1: test acc 0.333, seed 0.333, 4 wrong, 8 calls, 0 kept",  # the same texts again: duplicates
        "iteration 2: test acc 0.333, seed 0.333, 4 wrong, 0 calls, 0 kept"]
    assert all(len(line) <= 80 for line in lines)

    # run again into the same dir: every stage is read back, nothing is trained or asked again
    monkeypatch.setattr(student, "train", lambda *a: (_ for _ in ()).throw(AssertionError("trained again")))
    assert loop.run(cfg, RunStore(tmp_path / "run"), Console(file=io.StringIO())) == rows


def test_an_evaluation_stopped_part_way_resumes_with_the_answers_it_had_kept(tmp_path, intent_files, monkeypatch):
    """The run dir keeps an evaluation's answers as its batches end (beside the model that made them) and gives
    them back on resume; once the stage's output is written they are gone."""
    stub_models(monkeypatch, [])
    monkeypatch.setattr(student, "load_trained", lambda start, out, cfg: "trained, read back")
    cfg = build_config(config_dict(*intent_files, loop={"iterations": 1}, filters={"judge": "none"}))
    store, given = RunStore(tmp_path / "run"), []

    def stopped_after_one(model, tok, task, examples, *a):
        done, keep = a[-2], a[-1]
        given.append(dict(done))
        keep({examples[0]["id"]: " weather"})
        raise KeyboardInterrupt  # stopped after the first batch

    monkeypatch.setattr(student, "predict", stopped_after_one)
    try:
        loop.run(cfg, store, Console(file=io.StringIO()))
    except KeyboardInterrupt:
        pass
    assert given == [{}] and store.partial(0, "pred_seed.jsonl")
    monkeypatch.setattr(student, "predict", lambda model, tok, task, examples, *a: given.append(dict(a[-2])) or [
        a[-2].get(ex["id"], " alarm") for ex in examples])
    loop.run(cfg, store, Console(file=io.StringIO()))
    first = store.read_jsonl(0, "pred_seed.jsonl")[0]
    assert given[1] == {first["id"]: " weather"} and first["prediction"] == " weather"
    assert given[2] == {}  # the test set's evaluation had kept nothing
    assert not list((tmp_path / "run" / "iter_000" / "model").glob("partial_*"))


def test_kept_answers_are_used_only_by_a_model_with_the_weights_that_made_them(tmp_path):
    """Answers carried to a model trained again (another machine: benchmarks/study_state.py) count only where its
    weights are the same bytes."""
    store = RunStore(tmp_path / "run")
    model = store.model_dir(0)
    model.mkdir(parents=True)
    (model / "adapter_model.safetensors").write_bytes(b"weights one")
    store.keep_partial(0, "pred_test.jsonl", {"t1": " weather"})
    assert (model / "partial_pred_test.jsonl.weights").read_text().strip() == store.weights_digest(0) != ""
    assert RunStore(tmp_path / "run").partial(0, "pred_test.jsonl") == {"t1": " weather"}  # a resume, same model
    (model / "adapter_model.safetensors").write_bytes(b"weights two")  # trained again, to other bytes
    assert RunStore(tmp_path / "run").partial(0, "pred_test.jsonl") == {}
    (model / "partial_pred_test.jsonl.weights").unlink()  # kept before the digest was: as before, the dir's own
    assert RunStore(tmp_path / "run").partial(0, "pred_test.jsonl") == {"t1": " weather"}
    store.stage(0, "pred_test.jsonl", lambda: [{"id": "t1", "prediction": " weather"}])
    assert not list(model.glob("partial_*"))
