import json

import pytest

from llm2llm import UserError
from llm2llm.config import FilterConfig, TaskConfig
from llm2llm.filters import NearDuplicates, counts, keep, minhash, ngrams, normalise, synthetic_id
from llm2llm.store import RunStore
from llm2llm.tasks import NOT_AN_EXAMPLE, make_task


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
        "duplicate of an existing example", "duplicate of an existing example", "overlaps the test set",
        "empty reply", "copy of its parent", "teacher call failed: APITimeoutError: slow"]
    assert len(accepted) + len(rejected) == len(calls)  # nothing is dropped silently
    assert counts(accepted, rejected) == {"proposed": 5, "near_duplicates": 2, "test_overlap": 1, "not_examples": 0,
                                          "judged_out": 0}


def test_keep_reads_several_json_examples_per_reply_and_rejects_chatter_inside_them():
    task = make_task(TaskConfig(type="classification"), [{"text": "x", "label": "alarm"}, {"text": "y", "label": "music"}])
    parent = {"id": "s1", "text": "wake me at six", "label": "alarm"}
    reply = ('{"examples": [{"text": "get me up at five tomorrow"}, {"text": "I\'m sorry, I cannot write that"}, '
             '{"text": "Here is a new example: ring at 7"}, {"text": "set a wake-up call for 6:30"')  # cut off
    accepted, rejected = keep(task, [{"parent": parent, "sample": 0, "reply": {"text": reply}}], [parent], [], 1, "T")
    assert [a["text"] for a in accepted] == ["get me up at five tomorrow", "set a wake-up call for 6:30"]
    assert all(a["label"] == "alarm" for a in accepted)
    assert [r["reason"] for r in rejected] == [NOT_AN_EXAMPLE, NOT_AN_EXAMPLE]
    assert counts(accepted, rejected)["not_examples"] == 2 and counts(accepted, rejected)["proposed"] == 4


def task_and_parent():
    task = make_task(TaskConfig(type="classification"), [{"text": "x", "label": "alarm"}])
    return task, {"id": "s1", "text": "wake me at six", "label": "alarm"}


def test_near_duplicates_are_rejected():
    task, parent = task_and_parent()
    known = [parent, {"id": "s2", "text": "please set an alarm for seven thirty tomorrow morning", "label": "alarm"}]
    replies = ["please set an alarm for seven thirty tomorrow morning!", "Please set an alarm for 7:30 tomorrow",
               "set a timer for the pasta and the sauce"]
    calls = [{"parent": parent, "sample": i, "reply": {"text": t}} for i, t in enumerate(replies)]
    accepted, rejected = keep(task, calls, known, [], 1, "T")
    assert [r["reason"] for r in rejected] == ["near-duplicate of an existing example"]
    assert [a["text"] for a in accepted] == ["Please set an alarm for 7:30 tomorrow",
                                             "set a timer for the pasta and the sauce"]


def test_leakage_by_ngrams_drop_or_report():
    task, parent = task_and_parent()
    test = [{"id": "t", "text": "could you remind me to water the plants on the balcony every sunday", "label": "alarm"}]
    leaky = "hey remind me to water the plants on the balcony every sunday please"
    calls = [{"parent": parent, "sample": 0, "reply": {"text": leaky}},
             {"parent": parent, "sample": 1, "reply": {"text": "wake me when the sun is up"}}]
    accepted, rejected = keep(task, calls, [parent], test, 1, "T", FilterConfig(leakage_ngram=8))
    assert [r["reason"] for r in rejected] == ["overlaps the test set"] and len(accepted) == 1
    accepted, rejected = keep(task, calls, [parent], test, 1, "T", FilterConfig(leakage_ngram=8, leakage_action="report"))
    assert not rejected and [a.get("test_overlap", False) for a in accepted] == [True, False]
    assert counts(accepted, rejected)["test_overlap"] == 1


def test_ngrams_and_near_duplicate_index():
    assert ngrams("A b c", 5) == {("a", "b", "c")}
    assert ngrams("a b c d", 3) == {("a", "b", "c"), ("b", "c", "d")}
    index = NearDuplicates(0.85)
    index.add("book a table for two at the italian place tonight")
    assert index.match("Book a table for two at the Italian place tonight") == "duplicate of an existing example"
    assert index.match("book a table for two at the italian place tonight!!") == "near-duplicate of an existing example"
    assert index.match("what is the weather in oslo") is None
    strict = NearDuplicates(0.99)  # near 1 datasketch has no banding of its own: the candidates come at 0.9
    strict.add("book a table for two at the italian place tonight")
    assert strict.match("book a table for two at the italian place tonight!!") is None
    rng = __import__("random").Random(0)
    long = " ".join("".join(rng.choice("abcdefghij") for _ in range(6)) for _ in range(300))  # ~2,000 distinct 4-grams
    close = long[:1000] + "z" + long[1001:]  # one letter changed: Jaccard 0.996, MinHash's estimate 0.984
    strict.add(long)
    assert normalise(long) in strict.lsh.query(minhash(close))  # the index capped at 0.9 still finds the candidate
    high = NearDuplicates(0.98)
    high.add(long)
    assert high.match(close) == "near-duplicate of an existing example"
    assert strict.match("Book a table for two at the Italian place tonight") == "duplicate of an existing example"
    assert NearDuplicates(1.0).match("anything") is None


def test_synthetic_ids_come_from_content():
    a = synthetic_id({"text": "x", "label": "y"}, "p")
    assert a == synthetic_id({"label": "y", "text": "x"}, "p") and a != synthetic_id({"text": "x", "label": "y"}, "q")


def test_a_field_added_later_at_its_default_is_no_change(tmp_path):
    from llm2llm.config import build_config, changed_fields

    cfg = build_config({"task": {"type": "choice"}, "data": {"train": "t.jsonl", "test": "u.jsonl"}}).model_dump(mode="json")
    recorded = {**cfg, "task": {k: v for k, v in cfg["task"].items() if k != "answer_position"}}  # written before it
    assert changed_fields(recorded, cfg) == []
    assert changed_fields(recorded, {**cfg, "task": {**cfg["task"], "answer_position": "parent"}}) == [
        "task.answer_position"]
    assert changed_fields(cfg, {**cfg, "teacher": {**cfg["teacher"], "concurrency": 3}}) == []  # a free field
    assert changed_fields(cfg, {**cfg, "student": {**cfg["student"], "lr": 1.0}}) == ["student.lr"]
    no_loop = {k: v for k, v in cfg.items() if k != "loop"}  # a whole section written before it existed
    assert changed_fields(no_loop, cfg) == []
    assert changed_fields(no_loop, {**cfg, "loop": {**cfg["loop"], "iterations": 7}}) == ["loop"]
    test = {**cfg["data"]["test"], "limit": 5}  # data.test may be None: its fields are walked into all the same
    assert changed_fields(cfg, {**cfg, "data": {**cfg["data"], "test": test}}) == ["data.test.limit"]
    gone = {**cfg, "task": {k: v for k, v in cfg["task"].items() if k != "stop"}}  # a field this version lacks
    assert changed_fields({**cfg, "task": {**cfg["task"], "stop": ["x"]}}, gone) == ["task.stop"]
    store = RunStore(tmp_path / "run")
    store.open(recorded, changed_fields)
    assert RunStore(tmp_path / "run").open(cfg, changed_fields) is True
    with pytest.raises(UserError, match=r"different config \(task.answer_position\)"):
        RunStore(tmp_path / "run").open({**cfg, "task": {**cfg["task"], "answer_position": "parent"}}, changed_fields)


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


def test_choose_randomly_is_seeded_and_sized(intent_files):
    from conftest import config_dict
    from llm2llm.config import build_config
    from llm2llm.augment import choose_randomly

    parents = [{"id": str(i), "text": f"t{i}", "label": "alarm"} for i in range(10)]
    preds = [{"id": str(i), "prediction": " alarm" if i % 2 else " music", "correct": bool(i % 2)} for i in range(10)]
    cfg = build_config(config_dict(*intent_files, loop={"augment": "random", "random_counts": [3, 5]},
                                   teacher={"show_student_answer": True}))
    first = choose_randomly(parents, preds, n_wrong=7, iteration=0, cfg=cfg)
    assert len(first) == 3 and first == choose_randomly(parents, preds, 7, 0, cfg)
    assert all(p["student_prediction"] == preds[int(p["id"])]["prediction"] for p in first)
    # with show_student_answer the teacher hears of the student's answer only where it was wrong
    from llm2llm.augment import teacher_requests
    from llm2llm.tasks import make_task

    task = make_task(cfg.task, parents + [{"id": "m", "text": "tm", "label": "music"}])
    chosen = choose_randomly(parents, preds, 10, 3, cfg)
    notes = ["answered the last example wrongly" in r["messages"][-1]["content"]
             for r in teacher_requests(task, chosen, parents, 0, cfg)]
    assert notes == [not p["student_correct"] for p in chosen] and any(notes) and not all(notes)
    assert len(choose_randomly(parents, preds, 7, 1, cfg)) == 5
    assert len(choose_randomly(parents, preds, 7, 2, cfg)) == 7  # past the list: as many as were wrong


def test_the_random_arm_takes_iteration_zero_from_the_llm2llm_run_of_the_same_seed(tmp_path):
    from llm2llm.compare import Baseline, take_iteration_zero

    ours, rand = RunStore(tmp_path / "llm2llm"), RunStore(tmp_path / "random")
    seed = [{"id": "a", "text": "x", "label": "l"}, {"id": "b", "text": "y", "label": "l"}]
    for name, rows in (("train.jsonl", seed), ("pred_seed.jsonl", [{"id": "a"}]), ("pred_test.jsonl", [{"id": "t"}])):
        ours.write_jsonl(0, name, rows)
    judges = {"embedding": 0.9, "teacher": 0.8, "probe": {"judge_calls": 2}, "chosen": "embedding"}
    ours.write_json(0, "judges.json", judges)
    take_iteration_zero(rand, Baseline(ours), seed[:1])  # another seed sample: nothing taken
    assert not rand.has(0, "train.jsonl") and not rand.has(0, "judges.json")
    take_iteration_zero(rand, Baseline(ours), seed)
    assert [rand.read_jsonl(0, n) for n in ("train.jsonl", "pred_seed.jsonl", "pred_test.jsonl")] == \
        [seed, [{"id": "a"}], [{"id": "t"}]]
    assert rand.read_json(0, "judges.json") == judges  # the same judge, and its probe of the seed is not asked again


def test_with_the_run_dir_gone_the_random_arm_takes_iteration_zero_from_the_record(tmp_path):
    from llm2llm.compare import Baseline, iteration_zero_record, take_iteration_zero

    seed = [{"id": "a", "text": "x", "label": "pos"}, {"id": "b", "text": "y", "label": "neg"}]
    ours = RunStore(tmp_path / "llm2llm")
    ours.write_jsonl(0, "train.jsonl", seed)
    ours.write_jsonl(0, "pred_seed.jsonl", [{"id": "a", "prediction": " pos, for x", "answer": "pos", "correct": True},
                                            {"id": "b", "prediction": " pos", "answer": "pos", "correct": False}])
    assert iteration_zero_record(ours, TaskConfig(type="classification")) is None  # not evaluated on test: no record
    ours.write_jsonl(0, "pred_test.jsonl", [{"id": "t", "prediction": " neg", "answer": "neg", "correct": True}])
    assert "judges" not in iteration_zero_record(ours, TaskConfig(type="classification"))  # none chosen: none kept
    judges = {"embedding": 0.9, "teacher": 0.95, "probe": {"judge_calls": 2}, "chosen": "teacher"}
    ours.write_json(0, "judges.json", judges)
    record = iteration_zero_record(ours, TaskConfig(type="classification"))
    assert record == {"train_ids": ["a", "b"],
                      "pred_seed": [{"id": "a", "answer": "pos", "correct": True},
                                    {"id": "b", "answer": "pos", "correct": False}],
                      "pred_test": [{"id": "t", "answer": "neg", "correct": True}], "judges": judges}
    free_text = TaskConfig(type="custom", checker="exact", prompt_template="{text}")
    assert iteration_zero_record(ours, free_text)["pred_test"] == [{"id": "t", "correct": True}]  # no answer text
    gone = RunStore(tmp_path / "elsewhere")  # the LLM2LLM run dir is not on this machine
    shown = RunStore(tmp_path / "shown")
    take_iteration_zero(shown, Baseline(gone, record), seed, shows_answer=True)  # the teacher would see no answer
    assert not shown.has(0, "pred_seed.jsonl") and shown.read_json(0, "judges.json") == judges  # the judge: yes
    other = RunStore(tmp_path / "other")
    take_iteration_zero(other, Baseline(gone, record), seed[::-1])  # another seed sample
    assert not other.has(0, "train.jsonl") and not other.has(0, "judges.json")
    rand = RunStore(tmp_path / "random")
    take_iteration_zero(rand, Baseline(gone, record), seed)
    assert rand.read_jsonl(0, "train.jsonl") == seed and rand.read_json(0, "judges.json") == judges
    assert rand.read_jsonl(0, "pred_seed.jsonl") == [{"prediction": None, "id": "a", "answer": "pos", "correct": True},
                                                     {"prediction": None, "id": "b", "answer": "pos", "correct": False}]
    assert rand.read_jsonl(0, "pred_test.jsonl") == [{"prediction": None, "id": "t", "answer": "neg", "correct": True}]


def test_reasons_fall_into_a_few_categories():
    from llm2llm.filters import CATEGORIES, DUPLICATE, NEAR_DUPLICATE, TEST_OVERLAP, category

    found = {reason: category(reason) for reason in (
        "copy of its parent", DUPLICATE, NEAR_DUPLICATE, "judge: nearest to label 'music' (0.13 vs 0.40)",
        "judge: the teacher labels it 'x'", NOT_AN_EXAMPLE, "no JSON and no 'Input:'/'Output:' pair", "too long",
        TEST_OVERLAP, "teacher call failed: APIStatusError: 500", "judge: the call failed (timeout)",
        "judge: not asked (teacher budget reached)")}
    assert list(found.values()) == ["copy of parent", "duplicate", "near-duplicate", "judge disagrees",
                                    "judge disagrees", "not an example", "invalid", "invalid", "test overlap",
                                    "failed call", "failed call", "failed call"]
    assert set(found.values()) == set(CATEGORIES)


def test_replies_in_the_older_form_keep_their_meaning(intent_files):
    """Replies of teacher_calls.jsonl written before the `status` field: a "skipped" key (never asked) or an
    "error" key (failed) say the same as the status does now."""
    from llm2llm.records import status

    task = make_task(TaskConfig(type="classification"), [{"text": "x", "label": "alarm"}])
    parent = {"id": "p", "text": "wake me", "label": "alarm"}
    good = '{"examples": [{"text": "rouse me at dawn", "label": "alarm"}]}'
    replies = [{"text": "", "skipped": "budget", "prompt_tokens": 0, "completion_tokens": 0},
               {"text": "", "error": "APIStatusError: 500", "prompt_tokens": 0, "completion_tokens": 0},
               {"text": good, "prompt_tokens": 1, "completion_tokens": 1},
               {"text": "", "status": "skipped", "prompt_tokens": 0, "completion_tokens": 0},
               {"text": "", "status": "failed", "error": "timeout", "prompt_tokens": 0, "completion_tokens": 0}]
    assert [status(r) for r in replies] == ["skipped", "failed", "ok", "skipped", "failed"]
    calls = [{"parent": parent, "sample": i, "reply": r} for i, r in enumerate(replies)]
    accepted, rejected = keep(task, calls, [parent], [], 1, "t")
    assert [a["text"] for a in accepted] == ["rouse me at dawn"]
    assert [r["reason"] for r in rejected] == ["teacher call failed: APIStatusError: 500", "teacher call failed: timeout"]


def test_an_iterations_clock_survives_a_resume_and_a_finished_iteration_is_not_timed_again(tmp_path, monkeypatch):
    import llm2llm.loop as loop

    now = iter([100.0, 130.0, 500.0, 502.5, 900.0, 999.0])  # (start, end) of three timed blocks
    monkeypatch.setattr(loop.time, "time", lambda: next(now))
    store = RunStore(tmp_path / "run")
    with loop.Clock(store, 0).timed("train_s"):  # trained, then the run is killed
        pass
    clock = loop.Clock(store, 0)  # resumed: the training read back costs 2.5 s more
    with clock.timed("train_s"):
        pass
    assert clock.seconds == {"train_s": 32.5} == store.read_json(0, "clock.json")
    store.write_metrics({"iteration": 0, **clock.seconds})
    with loop.Clock(store, 0).timed("eval_s"):  # a later resume passes the finished iteration: nothing changes
        pass
    assert store.read_json(0, "clock.json") == {"train_s": 32.5}


def test_a_variant_study_reuses_another_ones_iteration_zero_and_teacher_replies(tmp_path):
    """`effect --reuse OTHER`: a study that differs only after iteration 0 (here task.answer_position) takes
    OTHER's iteration 0 and starts each arm with that arm's teacher cache there; any difference in what iteration 0
    is made of is a one-line error naming the fields."""
    from llm2llm.compare import reused, take_iteration_zero
    from llm2llm.config import load_config, portable
    from llm2llm.teacher import Cache

    rows = [{"id": str(i), "context": f"case {i} <HOLDING>", "endings": ["a", "b"], "label": i % 2} for i in range(6)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "c.yaml").write_text(f"task: {{type: choice}}\ndata: {{train: {tmp_path / 'train.jsonl'}, "
                                     "test_size: 2, seed_size: 4}\n")
    base = load_config(tmp_path / "c.yaml")
    other = tmp_path / "base" / "seed_0"
    done = RunStore(other / "llm2llm")
    seed = [{"id": "a", "context": "x", "endings": ["p", "q"], "label": 0}]
    done.open(base.model_dump(mode="json"))
    for name, kept in (("train.jsonl", seed), ("pred_seed.jsonl", [{"id": "a"}]), ("pred_test.jsonl", [{"id": "t"}])):
        done.write_jsonl(0, name, kept)
    (other / "llm2llm.json").write_text(json.dumps({"config": portable(base), "iteration_0": {"train_ids": ["a"]}}))
    (other / "random").mkdir()
    replies = Cache(other / "random" / "cache.sqlite")
    replies.put("k", {"text": "a reply"})  # left in the write-ahead log, as a running study leaves it
    variant = load_config(tmp_path / "c.yaml", ["task.answer_position=parent", "loop.iterations=5"])
    baseline = reused(other, variant, "random")
    assert baseline.record == {"train_ids": ["a"]} and baseline.cache == other / "random" / "cache.sqlite"
    arm = RunStore(tmp_path / "variant" / "seed_0" / "random")
    arm.open(variant.model_dump(mode="json"))
    own = Cache(arm.cache_path)  # the arm already has a cache (started once without --reuse): the replies are added
    own.put("mine", {"text": "its own"}), own.close()
    take_iteration_zero(arm, baseline, seed)
    take_iteration_zero(arm, baseline, seed)  # again (a resumed run): nothing doubles
    assert arm.read_jsonl(0, "pred_test.jsonl") == [{"id": "t"}]
    merged = Cache(arm.cache_path)
    assert merged.get("k") == {"text": "a reply"} and merged.get("mine") == {"text": "its own"}
    assert merged.db.execute("SELECT count(*) FROM calls").fetchone() == (2,)
    replies.close()
    assert not (other / "random" / "cache.sqlite-journal").exists()
    # after iteration 0 (loop, filters other than the judge, teacher sampling) may differ; what makes it may not
    for same in (["filters.near_duplicate_threshold=0.5"], ["teacher.temperature=0.2", "teacher.max_tokens=9"]):
        assert reused(other, load_config(tmp_path / "c.yaml", same), "llm2llm") is not None
    for change, field in (("student.lr=0.1", "student.lr"), ("filters.judge=none", "filters.judge"),
                          ("teacher.model=qwen2.5-coder-0.5b", "teacher.model"), ("data.seed_size=3", "data.seed_size")):
        with pytest.raises(UserError, match=rf"not this study's \({field} differ\)"):
            reused(other, load_config(tmp_path / "c.yaml", [change]), "random")
    with pytest.raises(UserError, match="loop.from_scratch: true"):
        reused(other, load_config(tmp_path / "c.yaml", ["loop.from_scratch=false"]), "random")
    (other / "llm2llm.json").unlink()  # the record gone: the run dir's config is compared instead
    assert reused(other, variant, "llm2llm").run.root == other / "llm2llm"
    with pytest.raises(UserError, match=r"not this study's \(student.lr differ\)"):
        reused(other, load_config(tmp_path / "c.yaml", ["student.lr=0.1"]), "random")
    done.path(0, "pred_test.jsonl").unlink()  # its iteration 0 not finished: nothing to take, so refused
    with pytest.raises(UserError, match="no finished iteration 0 to take"):
        reused(other, variant, "llm2llm")
    (other / "llm2llm" / "config.yaml").write_text("")
    with pytest.raises(UserError, match="damaged, not a config mapping"):
        reused(other, variant, "llm2llm")
    with pytest.raises(UserError, match="no LLM2LLM arm to reuse"):
        reused(tmp_path / "nothing", variant, "llm2llm")
