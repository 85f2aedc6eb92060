"""`llm2llm effect`'s statistics: paired differences per seed sample with a 95% paired-t interval, the wording
rule ("no detectable difference" where the interval covers 0), the kinds sent to the teacher and accepted, and the
run report's section on them. Every expected number is computed here by hand, not by the code under test."""
import json
import math

import pytest

from llm2llm.compare import arm_details, kind_of, markdown, paired, summarise
from llm2llm.config import TaskConfig
from llm2llm.report import write_report
from llm2llm.store import RunStore
from llm2llm.tasks import make_task

T_975_4 = 2.776  # Student's t, 0.975 quantile, 4 degrees of freedom (printed tables)


def test_paired_interval_matches_a_hand_computed_t_interval_and_says_no_detectable_difference():
    diffs = [0.01, 0.03, -0.02, 0.04, 0.02]
    mean = 0.08 / 5  # 0.016
    squares = [(d - mean) ** 2 for d in diffs]  # 0.000036, 0.000196, 0.001296, 0.000576, 0.000016
    sd = math.sqrt(sum(squares) / 4)  # sqrt(0.00212 / 4) = 0.023022
    half = T_975_4 * sd / math.sqrt(5)  # 0.028582
    p = paired(diffs)
    assert p["n"] == 5 and p["mean"] == pytest.approx(0.016) and p["sd"] == pytest.approx(0.0230217, abs=1e-6)
    assert p["low"] == pytest.approx(mean - half, abs=2e-4) and p["high"] == pytest.approx(mean + half, abs=2e-4)
    assert p["low"] == pytest.approx(-0.0126, abs=2e-4) and p["high"] == pytest.approx(0.0446, abs=2e-4)
    assert p["verdict"] == "no detectable difference"


def test_paired_interval_that_excludes_zero_says_higher_or_lower():
    up = paired([0.05, 0.07, 0.04, 0.06, 0.08])  # mean 0.06, sd sqrt(0.001/4) = 0.0158, half 0.0196
    assert up["low"] == pytest.approx(0.06 - T_975_4 * math.sqrt(0.001 / 4) / math.sqrt(5), abs=2e-4)
    assert up["low"] > 0 and up["verdict"] == "higher"
    assert paired([-0.05, -0.07, -0.04, -0.06, -0.08])["verdict"] == "lower"
    one = paired([0.2])  # one seed sample: no interval, so nothing detectable
    assert one["low"] is None and one["verdict"] == "no detectable difference"


def _rows(accs):
    return [{"iteration": i, "test_accuracy": a, "seed_accuracy": 0.5, "train_size": 10 + i, "wrong": 4,
             "calls": 4, "accepted": 2, "rejected": 2, "judged_out": 1, "prompt_tokens": 100,
             "completion_tokens": 50, "train_s": 60, "eval_s": 30, "teacher_s": 30} for i, a in enumerate(accs)]


def five_seeds():
    """LLM2LLM - plain = [0.01, 0.03, -0.02, 0.04, 0.02] (the hand-computed case); LLM2LLM - random = 0.05 .. 0.08."""
    plain = [0.50, 0.60, 0.70, 0.55, 0.65]
    ours = [p + d for p, d in zip(plain, [0.01, 0.03, -0.02, 0.04, 0.02])]
    rand = [o - d for o, d in zip(ours, [0.05, 0.07, 0.04, 0.06, 0.08])]
    return {s: {"llm2llm": _rows([plain[s], ours[s]]), "random": _rows([plain[s], rand[s]])} for s in range(5)}


def test_summary_and_table_give_paired_differences_and_never_call_an_interval_over_zero_a_gain():
    summary = summarise(five_seeds(), {s: 120.0 for s in range(5)})
    p = summary["paired"]
    assert p["llm2llm-plain"]["verdict"] == "no detectable difference"
    assert p["llm2llm-random"]["verdict"] == "higher" and p["random-plain"]["mean"] == pytest.approx(0.016 - 0.06)
    text = markdown(summary, "t")
    assert "| LLM2LLM - plain | +0.016 | 0.023 | [-0.013, +0.045] | +0.010, +0.030, -0.020, +0.040, +0.020 | " \
           "no detectable difference |" in text
    assert "| LLM2LLM - random | +0.060 | 0.016 | [+0.040, +0.080] |" in text and "| LLM2LLM higher |" in text
    assert "gain" not in text.split("Paired differences")[1]
    it1 = [r for r in summary["iterations"] if r["arm"] == "llm2llm" and r["iteration"] == 1][0]
    assert it1["tokens"] == 150 and it1["minutes"] == 2.0 and it1["judged_out"] == 1
    assert summary["stage_minutes_per_seed"][0] == 8.0  # 2 arms x 2 iterations x 2 min
    # 5 seeds x 2 arms x 2 iterations = 20 rows of 60 s training, 30 s evaluation, 30 s teacher
    assert summary["stage_minutes"] == {"training": 20.0, "evaluation": 10.0, "teacher": 10.0}
    assert "Where the time went, summed over seed samples and arms: training 20.0 min, evaluation 10.0 min, " \
           "teacher 10.0 min" in text


def test_kinds_sent_and_accepted_per_arm(tmp_path):
    intent = make_task(TaskConfig(type="classification"), [{"text": "x", "label": "alarm"}])
    math_task = make_task(TaskConfig(type="math"))
    choice = make_task(TaskConfig(type="choice"))
    assert kind_of(intent, {"text": "wake me", "label": "alarm"}) == "alarm"
    assert kind_of(math_task, {"question": "q", "answer": "a = 1\nb = 2\n#### 3"}) == "2 steps"
    assert kind_of(math_task, {"question": "q", "answer": "1\n2\n3\n4\n5\n6\n#### 3"}) == "5+ steps"
    assert kind_of(choice, {"context": "c", "endings": ["a", "b"], "label": 1}) == "option 1"
    runs = {}
    for arm, sent_name in (("llm2llm", "wrong.jsonl"), ("random", "chosen.jsonl")):
        store = RunStore(tmp_path / arm)
        store.open({})
        store.write_metrics({"iteration": 0})
        store.write_metrics({"iteration": 1})
        store.write_jsonl(0, sent_name, [{"id": "a", "label": "alarm"}, {"id": "b", "label": "alarm"},
                                         {"id": "c", "label": "music"}])
        store.write_jsonl(0, "accepted.jsonl", [{"id": "n", "label": "alarm"}])
        store.write_jsonl(0, "rejected.jsonl", [{"reason": "judge: the teacher labels it 'music'"},
                                                {"reason": "judge: the teacher labels it 'x'"},
                                                {"reason": "near-duplicate of an existing example"}])
        store.write_jsonl(1, "wrong.jsonl", [{"id": "a", "label": "alarm"}])  # the last iteration sends nothing
        runs[arm] = arm_details(store, intent)
    assert runs["llm2llm"] == [{"iteration": 0, "parents": {"alarm": 2, "music": 1}, "accepted": {"alarm": 1},
                                "reasons": {"judge disagrees": 2, "near-duplicate": 1}}]
    summary = summarise(five_seeds(), {s: 1.0 for s in range(5)}, {0: runs, 1: runs})
    text = markdown(summary, "t")
    assert "| llm2llm | 0 | alarm: 4, music: 2 | alarm: 2 | judge disagrees: 4, near-duplicate: 2 |" in text


def test_run_report_of_an_effect_seed_sample_shows_the_paired_intervals(tmp_path):
    runs = five_seeds()
    (tmp_path / "effect.json").write_text(json.dumps(summarise(runs, {s: 60.0 for s in range(5)})))
    store = RunStore(tmp_path / "seed_0" / "llm2llm")
    store.open({})
    for m in runs[0]["llm2llm"]:
        store.write_metrics(m)
    md, page = write_report(store.root)
    text = md.read_text()
    assert "LLM2LLM - random, paired: +0.060, 95% interval [+0.040, +0.080]: higher." in text
    assert "## Over the seed samples" in text and "| LLM2LLM - plain | +0.016 | 0.023 | [-0.013, +0.045] |" in text
    assert "<td>no detectable difference</td>" in page.read_text()


def test_effect_benchmark_writes_its_block_between_the_markers_and_keeps_the_rest(tmp_path, capsys):
    from benchmarks.effect import block, write_block

    doc = tmp_path / "results.md"
    doc.write_text("# Results\nfirst comparison\n<!-- effect:strong:begin -->\nold\n<!-- effect:strong:end -->\ntail\n")
    out = tmp_path / "runs"
    (out / "a_strong").mkdir(parents=True)
    (out / "a_strong" / "effect.json").write_text(json.dumps({"seeds": [0, 1]}))
    (out / "a_strong" / "effect.md").write_text("### a_strong.yaml\n\ntable\n")
    (out / "a_strong" / "wall.json").write_text(json.dumps([{"minutes": 1.5}, {"minutes": 2.0}]))
    for seed, seconds in ((0, 90.0), (1, 150.0)):  # seed 0 finished in an invocation that recorded nothing
        (out / "a_strong" / f"seed_{seed}").mkdir()
        rows = {"llm2llm": [{"train_s": 30.0, "eval_s": 20.0, "teacher_s": seconds}], "random": [{"train_s": 10.0}]}
        (out / "a_strong" / f"seed_{seed}" / "summary.json").write_text(json.dumps({"seconds": seconds, "runs": rows}))
    (out / "b_strong" / "seed_0").mkdir(parents=True)  # b: seed 0 finished, seed 1 stopped part-way
    (out / "b_strong" / "seed_0" / "summary.json").write_text(json.dumps({"seconds": 60.0, "runs": {}}))
    (out / "b_strong" / "seed_1").mkdir()
    write_block(doc, "strong",
                block(["a_strong", "b_strong", "c_strong"], "0,1", out, "python benchmarks/effect.py", "abc1234"))
    text = doc.read_text()
    assert text.startswith("# Results\nfirst comparison\n<!-- effect:strong:begin -->\nWritten by") and "old" not in text
    assert text.endswith("### a_strong.yaml\n\ntable\n<!-- effect:strong:end -->\ntail\n")
    assert "| a_strong | benchmarks/effect/a_strong.yaml | done | stages 6.0 min in 2 seed sample(s) (finishing invocations 4.0 min); 2 invocation(s) recorded, 3.5 min |" in text
    assert ("| b_strong | benchmarks/effect/b_strong.yaml | stopped or running: seed_0 done; seed_1 started | stages "
            "0.0 min in 1 seed sample(s) (finishing invocations 1.0 min); 0 invocation(s) recorded, 0.0 min |") in text
    assert "| c_strong | benchmarks/effect/c_strong.yaml | not yet run | — |" in text
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    with pytest.raises(SystemExit) as exit_:
        write_block(bare, "strong", "x")
    assert exit_.value.code == 2 and bare.read_text() == "no markers\n"
    assert "no '<!-- effect:strong:begin -->'" in capsys.readouterr().err


def test_select_setting_bad_grid_values_are_a_one_line_usage_error(capsys):
    from benchmarks.select_setting import numbers

    assert numbers("1e-4, 3e-4", float) == [1e-4, 3e-4]
    with pytest.raises(SystemExit) as exit_:
        numbers("1,two", int)
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: '1,two': expected comma-separated numbers\n"


def test_select_setting_rule_best_validation_then_fewer_epochs_smaller_seed_lower_lr():
    from benchmarks.select_setting import choose

    rows = [{"epochs": 3, "lr": 1e-4, "seed_size": 24, "val_accuracy": 0.8},
            {"epochs": 1, "lr": 3e-4, "seed_size": 48, "val_accuracy": 0.8},
            {"epochs": 1, "lr": 1e-4, "seed_size": 48, "val_accuracy": 0.1 + 0.7},  # 0.7999999999999999: a tie
            {"epochs": 2, "lr": 1e-4, "seed_size": 24, "val_accuracy": 0.75}]
    assert choose(rows) is rows[2]
    assert choose(rows[:2]) is rows[1] and choose([rows[0], rows[3]]) is rows[0]


def test_select_setting_pool_never_holds_a_test_row(tmp_path, intent_files):
    """Validation is held out of the pool; the pool is train minus the (fixed) held-out test set."""
    import yaml

    from benchmarks.select_setting import write_pool
    from conftest import config_dict, write_jsonl
    from llm2llm.config import load_config
    from llm2llm.data import load_splits

    rows = [{"id": f"r{i}", "text": f"request number {i}", "label": "ab"[i % 2]} for i in range(40)]
    data = write_jsonl(tmp_path / "all.jsonl", rows)
    tree = config_dict(data, data, data={"test": None, "test_size": 10, "seed_size": 5, "test_seed": 3})
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(tree))
    pool, size = write_pool(config, [], tmp_path / "sel")
    cfg = load_config(config)
    _, _, test = load_splits(cfg.data, lambda r: make_task(cfg.task, r))
    pooled = [json.loads(x)["id"] for x in pool.read_text().splitlines()]
    assert size == 5 and len(pooled) == 30 and not set(pooled) & {ex["id"] for ex in test}
    tree["data"]["test_seed"] = None
    config.write_text(yaml.safe_dump(tree))
    from llm2llm import UserError

    with pytest.raises(UserError, match="set data.test_seed"):
        write_pool(config, [], tmp_path / "other")


def test_select_setting_reads_a_candidate_from_candidates_json_when_its_run_dir_is_gone(tmp_path, intent_files,
                                                                                         monkeypatch):
    """A selection moves between machines without its run dirs: a finished candidate's figures are read from
    OUT/candidates.json, not trained again; the same name with another config there is a one-line error."""
    import argparse
    import shutil

    import yaml
    from rich.console import Console

    from benchmarks.select_setting import candidate
    from conftest import config_dict
    from llm2llm import UserError, loop

    trained = []

    def stand_in(cfg, store, console):
        trained.append(cfg.student.lr)
        store.open({})
        store.write_metrics({"iteration": 0, "test_accuracy": 0.75, "seed_accuracy": 0.5, "wrong": 2})

    monkeypatch.setattr(loop, "run", stand_in)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(config_dict(*intent_files, data={"test": None, "test_size": 2, "test_seed": 1})))
    args = argparse.Namespace(out=tmp_path / "sel", val_size=2, val_seed=4321)
    setting = {"epochs": 1, "lr": 3e-4, "seed_size": 2}
    want = {"val_accuracy": 0.75, "seed_accuracy": 0.5, "wrong": 2}
    assert candidate(config, [], setting, 0, intent_files[0], args, Console(quiet=True)) == want
    shutil.rmtree(args.out / "e1-lr0.0003-s2-seed0")
    assert candidate(config, [], setting, 0, intent_files[0], args, Console(quiet=True)) == want
    assert trained == [3e-4]
    with pytest.raises(UserError, match=r"e1-lr0.0003-s2-seed0 was run with a different config \(student.max_length\)"):
        candidate(config, ["student.max_length=64"], setting, 0, intent_files[0], args, Console(quiet=True))


def test_arm_contents_prints_what_each_arm_sent_and_kept_and_the_test_bias(tmp_path, capsys):
    from benchmarks.arm_contents import main

    def write(path, rows):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    seed = tmp_path / "seed_0"
    train = [{"id": "s1", "text": "a b", "label": "neg"}, {"id": "s2", "text": "c d e f", "label": "pos"}]
    for arm, parents in (("llm2llm", "wrong.jsonl"), ("random", "chosen.jsonl")):
        write(seed / arm / "iter_000" / "train.jsonl", train)
        write(seed / arm / "iter_000" / parents, [train[0]] if arm == "llm2llm" else [train[1]])
        write(seed / arm / "iter_000" / "accepted.jsonl", [{"text": "Very Bad Film", "label": "neg"}])
        write(seed / arm / "iter_000" / "pred_test.jsonl", [{"answer": "neg", "correct": True},
                                                            {"answer": "neg", "correct": False}])
        write(seed / arm / "iter_001" / "pred_test.jsonl", [{"answer": "pos", "correct": True},
                                                            {"answer": "neg", "correct": True}])
        write(seed / arm / "iter_001" / "wrong.jsonl", [train[0]])
    main(tmp_path)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ("seed_0 llm2llm: parents 1: neg 1.00, pos 0.00; 2.0 words; lower case 1.00 | "
                      "accepted 1: neg 1.00, pos 0.00; 3.0 words; lower case 0.00")
    assert out[1].endswith("(test inputs given neg/pos): 0.500 (2/0), 1.000 (1/1)")
    assert out[2] == "    wrong at iteration 0: 1; of them still wrong at the last: 1 (wrong then: 1)"
    assert out[3].startswith("seed_0 random: parents 1: neg 0.00, pos 1.00; 4.0 words")


def test_effect_benchmark_tables_only_writes_the_block_and_runs_nothing(tmp_path, monkeypatch):
    import benchmarks.effect as effect

    doc = tmp_path / "results.md"
    doc.write_text("<!-- effect:strong:begin -->\nold\n<!-- effect:strong:end -->\n")
    (tmp_path / "study" / "a_strong" / "seed_0").mkdir(parents=True)
    monkeypatch.setattr(effect, "run_task", lambda *a: pytest.fail("--tables-only ran a task"))
    monkeypatch.setattr("sys.argv", ["effect.py", "--tables-only", "--tasks", "a_strong,b_strong",
                                     "--out", str(tmp_path / "study"), "--results", str(doc)])
    effect.main()
    text = doc.read_text()
    assert "| a_strong | benchmarks/effect/a_strong.yaml | stopped or running: seed_0 started | — |" in text
    assert "| b_strong | benchmarks/effect/b_strong.yaml | not yet run | — |" in text and "old" not in text


def test_effect_benchmark_for_one_study_task_keeps_the_other_study_tasks_in_the_block(tmp_path, monkeypatch):
    import benchmarks.effect as effect

    doc = tmp_path / "results.md"
    doc.write_text("<!-- effect:strong:begin -->\nold\n<!-- effect:strong:end -->\n")
    for name in ("gsm8k_strong", "sst2_strong"):
        (tmp_path / "study" / name).mkdir(parents=True)
    monkeypatch.setattr("sys.argv", ["effect.py", "--tables-only", "--tasks", "gsm8k_strong",
                                     "--out", str(tmp_path / "study"), "--results", str(doc)])
    effect.main()
    rows = [line.split(" | ")[0] for line in doc.read_text().splitlines()
            if line.startswith("| ") and "_strong" in line]
    assert rows == ["| sst2_strong", "| gsm8k_strong"]  # the study's order; tasks with no folder in OUT left out


def test_study_details_counts_test_answers_per_iteration_taking_iteration_0_from_the_record(tmp_path):
    from benchmarks.study_details import answers_on_test
    seed = tmp_path / "seed_0"
    (seed / "random" / "iter_000").mkdir(parents=True)  # iteration 0 came from the LLM2LLM arm's record
    (seed / "random" / "iter_001").mkdir()
    plain = [{"id": f"t{i}", "answer": 4, "correct": i < 1} for i in range(4)]
    (seed / "llm2llm.json").write_text(json.dumps({"config": {"task": {"type": "choice"}},
                                                   "iteration_0": {"pred_test": plain}}))
    later = [{"id": "t0", "answer": 1, "correct": True}, {"id": "t1", "answer": 1, "correct": False},
             {"id": "t2", "answer": 4, "correct": False}, {"id": "t3", "answer": 2, "correct": False}]
    (seed / "random" / "iter_001" / "pred_test.jsonl").write_text("".join(json.dumps(p) + "\n" for p in later))
    assert answers_on_test(seed, "random") == ["    iter_000: 4: 4 (0.25 right)",
                                            "    iter_001: 1: 2 (0.50 right), 2: 1 (0.00 right), 4: 1 (0.00 right)"]
    assert answers_on_test(seed, "llm2llm") == []  # no run dir: nothing to count


def test_effect_benchmark_stamps_the_commit_it_started_from_not_the_tree_its_own_writes_dirtied(tmp_path, monkeypatch):
    import benchmarks.effect as effect

    doc = tmp_path / "results.md"
    doc.write_text("<!-- effect:strong:begin -->\nold\n<!-- effect:strong:end -->\n")
    paired = {key: {"mean": 0.0, "low": None, "high": None} for key in ("llm2llm-random", "llm2llm-plain")}
    for name in ("gsm8k_strong", "sst2_strong"):  # both done: the invocation only rewrites the block, once per task
        (tmp_path / "study" / name).mkdir(parents=True)
        (tmp_path / "study" / name / "effect.json").write_text(json.dumps({"seeds": [0], "paired": paired}))
    # git status sees the block the first task's write left in results.md: later reads would say "uncommitted"
    stamps = iter(["abc1234", "abc1234 with uncommitted changes"])
    monkeypatch.setattr(effect, "git_commit", lambda: next(stamps))
    monkeypatch.setattr("sys.argv", ["effect.py", "--tasks", "gsm8k_strong,sst2_strong", "--seeds", "0",
                                     "--out", str(tmp_path / "study"), "--results", str(doc)])
    effect.main()
    text = doc.read_text()
    assert "at commit abc1234 on " in text and "uncommitted" not in text
    assert "python benchmarks/effect.py --tasks gsm8k_strong,sst2_strong --seeds 0 --out" in text
