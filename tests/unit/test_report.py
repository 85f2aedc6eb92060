import json
import re
from pathlib import Path

import pytest

from llm2llm.report import write_report
from llm2llm.store import RunStore


def test_report_matches_metrics(tmp_path):
    store = RunStore(tmp_path / "run")
    store.open({"teacher": {"samples_per_example": 2, "price_per_million": {"prompt": 100, "completion": 200}}})
    metrics = [
        {"iteration": 0, "train_size": 10, "seed_accuracy": 0.5, "test_accuracy": 0.4, "wrong": 5, "generated": 5,
         "accepted": 3, "rejected": 2, "prompt_tokens": 100, "completion_tokens": 50, "cost": 0.0125,
         "steps": 4, "train_loss": 1.25, "padding_waste": 0.031},
        {"iteration": 1, "train_size": 13, "seed_accuracy": 0.7, "test_accuracy": 0.55, "wrong": 3, "generated": 0,
         "accepted": 0, "rejected": 0, "prompt_tokens": 0, "completion_tokens": 0}]
    for m in metrics:
        store.write_metrics(m)
    store.write_jsonl(0, "wrong.jsonl", [{"id": "s1", "text": "wake me <early>", "label": "alarm"}])
    store.write_jsonl(0, "accepted.jsonl", [{"id": "n1", "text": "rouse me at dawn", "label": "alarm", "parent_id": "s1"}])
    store.write_jsonl(0, "rejected.jsonl", [{"reason": "empty reply"}, {"reason": "copy of its parent"}])
    store.write_json(0, "teacher_stats.json", {"made": 5, "seconds": 2.5, "req_per_s": 2.0, "retries": 4,
                                                "failed": 1, "cached": 0, "skipped": 0})
    md, page = write_report(store.root)
    text = md.read_text()
    assert "Iteration 0: trained 4 steps, loss 1.250, 3.1% of batch tokens padding." in text
    assert "Iteration 0: 5 teacher calls in 2.5 s (2.0 req/s), 4 retries, 1 failed." in text
    # 3 still wrong x 2 samples = 6 calls at 20 + 10 tokens each: 120 x 100 + 60 x 200 per million = 0.024
    assert "6 teacher calls (3 seed examples x 2 samples), about 120 prompt + 60 completion tokens" in text
    assert "costing about 0.024." in text
    assert "| 1 | 13 | 0.700 | 0.550 | +0.150 | 3 |" in text
    assert "Gain over iteration 0 (plain fine-tuning): +0.150 test accuracy (0.400 -> 0.550), on one seed sample" in text
    body = page.read_text()
    assert len(re.findall(r'src="data:image/png;base64,', body)) == 5
    assert "rouse me at dawn" in body and "wake me &lt;early&gt;" in body  # texts are escaped, not markup
    assert "<td>0.550</td>" in body and "<td>+0.150</td>" in body and "<td>0.0125</td>" in body
    assert (store.root / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((store.root / "metrics.jsonl").read_text().splitlines()[1])["test_accuracy"] == 0.55


def test_report_gives_the_spread_when_the_run_is_one_seed_sample_of_effect(tmp_path):
    from llm2llm.compare import markdown, summarise

    def rows(accs):
        return [{"iteration": i, "test_accuracy": a, "seed_accuracy": 0.5, "train_size": 10 + i, "wrong": 4,
                 "generated": 4, "accepted": 2, "rejected": 2} for i, a in enumerate(accs)]

    runs = {0: {"llm2llm": rows([0.5, 0.6]), "random": rows([0.5, 0.5])},
            1: {"llm2llm": rows([0.6, 0.6]), "random": rows([0.6, 0.7])}}
    summary = summarise(runs, {0: 60.0, 1: 90.0})
    assert summary["accuracy"]["plain"]["mean"] == 0.55 and round(summary["gain"]["llm2llm"]["mean"], 4) == 0.05
    assert round(summary["gain"]["llm2llm"]["sd"], 4) == 0.0707 and [round(v, 4) for v in summary["gain"]["random"]["values"]] == [0.0, 0.1]
    # each seed's run has iterations 0 and 1: LLM2LLM's accuracy is after 1 iteration
    assert "| LLM2LLM (1 iteration) | 0.600 ± 0.000 [0.600, 0.600] | +0.050 ± 0.071 | 0.600, 0.600 |" in markdown(
        summary, "t")
    longer = {**runs, 2: {"llm2llm": rows([0.5, 0.6, 0.7]), "random": rows([0.5, 0.5, 0.5])}}
    assert "| LLM2LLM (1-2 iterations) |" in markdown(summarise(longer, {0: 1, 1: 1, 2: 1}), "t")
    (tmp_path / "effect.json").write_text(json.dumps(summary))
    store = RunStore(tmp_path / "seed_0" / "llm2llm")
    store.open({})
    for m in runs[0]["llm2llm"]:
        store.write_metrics(m)
    md, _ = write_report(store.root)
    assert "LLM2LLM over 2 seed samples: +0.050 ± 0.071 (random augmentation: +0.050 ± 0.071)" in md.read_text()
    other = RunStore(tmp_path / "seed_1" / "random")
    other.open({})
    for m in runs[1]["random"]:
        other.write_metrics(m)
    assert "+0.100 test accuracy (0.600 -> 0.700); random augmentation over 2 seed samples: +0.050 ± 0.071 " \
           "(LLM2LLM: +0.050 ± 0.071)" in write_report(other.root)[0].read_text()


def test_export_jsonl_and_hf_folder(tmp_path):
    import datasets
    from typer.testing import CliRunner

    from llm2llm.cli import app

    store = RunStore(tmp_path / "run")
    store.open({"x": 1})
    store.write_metrics({"iteration": 0})
    store.write_metrics({"iteration": 1})
    seed = {"id": "s1", "text": "wake me", "label": "alarm", "origin": "seed", "parent_id": None, "iteration": 0,
            "teacher_model": None}
    new = {"id": "syn-1", "text": "rouse me", "label": "alarm", "origin": "teacher", "parent_id": "s1", "iteration": 1,
           "teacher_model": "T"}
    store.write_jsonl(1, "train.jsonl", [seed, new])
    result = CliRunner().invoke(app, ["export", str(store.root), "--out", str(tmp_path / "final.jsonl")])
    assert result.exit_code == 0, result.output
    assert [json.loads(x) for x in (tmp_path / "final.jsonl").read_text().splitlines()] == [seed, new]
    result = CliRunner().invoke(app, ["export", str(store.root), "--format", "hf", "--out", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    loaded = datasets.load_dataset(str(tmp_path / "hf"), split="train")
    assert loaded["origin"] == ["seed", "teacher"] and loaded["parent_id"] == [None, "s1"]
    bad = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code == 2 and "no metrics.jsonl" in bad.output


def test_effect_runs_both_arms_per_seed_and_refreshes_their_reports(tmp_path, intent_files):
    """`effect` with a stand-in for the training loop: each seed sample runs LLM2LLM, then random augmentation
    with LLM2LLM's teacher-call counts, and every run's report ends up stating the spread."""
    import yaml
    from rich.console import Console

    from conftest import config_dict
    from llm2llm.compare import effect

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(config_dict(*intent_files)))
    seen = []

    def execute(cfg, out, baseline=None):
        seen.append((out.parent.name, out.name, cfg.data.sampling_seed, cfg.student.seed, cfg.loop.augment,
                     cfg.loop.random_counts, baseline.run.root.name if baseline else None))
        store = RunStore(out)
        store.open({})
        bump = 0.1 * (cfg.data.sampling_seed + 1) if out.name == "llm2llm" else 0.0
        for i in range(2):
            store.write_metrics({"iteration": i, "test_accuracy": 0.5 + bump * i, "seed_accuracy": 0.5,
                                 "train_size": 10 + i, "wrong": 3, "generated": 3 * (1 - i), "accepted": 2, "rejected": 1})
        write_report(out)

    summary = effect(config, [], [0, 1], tmp_path / "fx", Console(quiet=True), execute)
    assert seen == [("seed_0", "llm2llm", 0, 0, "wrong", None, None), ("seed_0", "random", 0, 0, "random", [3], "llm2llm"),
                    ("seed_1", "llm2llm", 1, 1, "wrong", None, None), ("seed_1", "random", 1, 1, "random", [3], "llm2llm")]
    assert [round(v, 3) for v in summary["gain"]["llm2llm"]["values"]] == [0.1, 0.2]
    assert json.loads((tmp_path / "fx" / "effect.json").read_text())["seeds"] == [0, 1]
    assert "LLM2LLM over 2 seed samples: +0.150 ± 0.071 (random augmentation: +0.000 ± 0.000)" in \
        (tmp_path / "fx" / "seed_1" / "llm2llm" / "report.md").read_text()


def test_effect_counts_a_finished_seed_sample_from_its_summary_when_the_run_dirs_are_gone(tmp_path, intent_files):
    """A study moves between machines without its run dirs: a finished seed sample's figures are read from
    seed_N/summary.json (no text of the data in it), not run again; a different config there is a one-line error."""
    import shutil

    import yaml
    from rich.console import Console

    from conftest import config_dict
    from llm2llm import UserError
    from llm2llm.compare import effect

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(config_dict(*intent_files)))
    calls = []

    def execute(cfg, out, baseline=None):
        calls.append((cfg.data.sampling_seed, out.name))
        store = RunStore(out)
        store.open({})
        for i in range(2):
            store.write_metrics({"iteration": i, "test_accuracy": 0.5 + (0.1 * i if out.name == "llm2llm" else 0),
                                 "seed_accuracy": 0.5, "train_size": 10 + i, "wrong": 3, "calls": 3 * (1 - i),
                                 "accepted": 2, "rejected": 1})

    first = effect(config, [], [0, 1], tmp_path / "fx", Console(quiet=True), execute)
    assert len(calls) == 4
    texts = {r["text"] for r in map(json.loads, Path(intent_files[0]).read_text().splitlines())}
    kept = (tmp_path / "fx" / "seed_0" / "summary.json").read_text()
    assert not any(t in kept for t in texts)
    for seed in (0, 1):
        for arm in ("llm2llm", "random"):
            shutil.rmtree(tmp_path / "fx" / f"seed_{seed}" / arm)
    again = effect(config, [], [0, 1, 2], tmp_path / "fx", Console(quiet=True), execute)
    assert calls[4:] == [(2, "llm2llm"), (2, "random")]  # only the new seed sample ran
    assert again["paired"]["llm2llm-random"]["values"][:2] == first["paired"]["llm2llm-random"]["values"]
    with pytest.raises(UserError, match=r"seed_0/summary.json: holds a seed sample run with a different config "
                                        r"\(student.lr\)"):
        effect(config, ["student.lr=0.5"], [0], tmp_path / "fx", Console(quiet=True), execute)
    moved = tmp_path / "elsewhere"  # the same data in another place (a clone): still the same seed samples
    moved.mkdir()
    for name in ("train.jsonl", "test.jsonl"):
        (moved / name).write_bytes((tmp_path / name).read_bytes())
    config.write_text(yaml.safe_dump(config_dict(moved / "train.jsonl", moved / "test.jsonl")))
    assert effect(config, [], [0, 1, 2], tmp_path / "fx", Console(quiet=True), execute)["seeds"] == [0, 1, 2]
    assert len(calls) == 6
    (moved / "test.jsonl").write_text((moved / "test.jsonl").read_text().replace("will it snow", "will it hail"))
    with pytest.raises(UserError, match=r"different config \(data.test.path\)"):
        effect(config, [], [0], tmp_path / "fx", Console(quiet=True), execute)


def test_a_run_dir_from_before_the_rename_of_generated_to_calls_reads_the_same(tmp_path):
    """metrics.jsonl rows written by older versions name the teacher calls `generated`: the table, the report's
    projection, compare's call counts and resume read them as `calls`, and rows already written stay as they are."""
    from llm2llm.cli import metrics_table
    from llm2llm.report import metrics_table as cells, projection

    store = RunStore(tmp_path / "old")
    store.open({})
    old = [{"iteration": 0, "train_size": 10, "seed_accuracy": 0.5, "test_accuracy": 0.4, "wrong": 3, "generated": 6,
            "accepted": 4, "rejected": 2, "prompt_tokens": 600, "completion_tokens": 300}]
    (store.root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    assert store.metrics()[0]["calls"] == 6 and "generated" not in store.metrics()[0]
    head, rows = cells(store.metrics(), console=True)
    assert rows[0][head.index("calls")] == "6" and metrics_table(store.metrics()).columns[6].header == "calls"
    assert "at this run's 150 tokens per call" in projection(store.metrics(), {})
    store.write_metrics({**old[0], "iteration": 1, "generated": None, "calls": 2})  # a resumed run's next row
    written = [json.loads(line) for line in (store.root / "metrics.jsonl").read_text().splitlines()]
    assert written[0] == old[0] and [m["calls"] for m in store.metrics()] == [6, 2]
    assert "| 0 | 10 | 0.500 | 0.400 | +0.000 | 3 | 6 | 4 | 2 |" in write_report(store.root)[0].read_text()


def test_the_rejects_plot_counts_categories_not_every_judge_message(tmp_path, monkeypatch):
    from llm2llm import report

    store = RunStore(tmp_path / "run")
    store.open({})
    store.write_metrics({"iteration": 0, "train_size": 10, "seed_accuracy": 0.5, "test_accuracy": 0.4, "wrong": 3,
                         "calls": 3, "accepted": 0, "rejected": 4})
    store.write_jsonl(0, "rejected.jsonl", [{"reason": "judge: nearest to label 'music' (0.13 vs 0.11)"},
                                            {"reason": "judge: nearest to label 'alarm' (0.20 vs 0.12)"},
                                            {"reason": "copy of its parent"}, {"reason": "teacher call failed: 500"}])
    seen = {}
    plots = report._plots
    monkeypatch.setattr(report, "_plots", lambda metrics, reasons: seen.update(reasons) or plots(metrics, reasons))
    write_report(store.root)
    assert seen == {0: {"judge disagrees": 2, "copy of parent": 1, "failed call": 1}}
    assert len(store.read_jsonl(0, "rejected.jsonl")) == 4  # the full reasons stay on disk


def test_a_seed_sample_half_done_on_another_machine_runs_only_its_random_arm(tmp_path, intent_files):
    """A seed sample can outlast two machines: a finished LLM2LLM arm leaves seed_N/llm2llm.json (its rows and
    label counts, no text of the data); with its run dir gone, the next invocation runs only the random arm, with
    the recorded arm's call counts and no baseline to take iteration 0 from; another config there is an error."""
    import shutil

    import yaml
    from rich.console import Console

    from conftest import config_dict
    from llm2llm import UserError
    from llm2llm.compare import effect

    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(config_dict(*intent_files)))
    calls = []

    class Stop(Exception):
        pass

    def execute(cfg, out, baseline=None):
        calls.append((out.name, cfg.loop.random_counts, baseline and baseline.run.has(0, "pred_test.jsonl"),
                      baseline and baseline.record))
        if out.name == "random" and len(calls) == 2:
            raise Stop  # the first machine goes away during the random arm
        store = RunStore(out)
        store.open({})
        for i in range(3):
            store.write_metrics({"iteration": i, "test_accuracy": 0.5 + (0.1 * i if out.name == "llm2llm" else 0),
                                 "seed_accuracy": 0.5, "train_size": 10 + i, "wrong": 3, "calls": 4 - i,
                                 "accepted": 2, "rejected": 1})
        if out.name == "llm2llm":
            store.write_jsonl(0, "train.jsonl", [{"id": "s1", "text": "wake me at six", "label": "alarm"}])
            store.write_jsonl(0, "pred_seed.jsonl", [{"id": "s1", "prediction": "wake me at six: alarm",
                                                      "answer": "alarm", "correct": True}])
            store.write_jsonl(0, "pred_test.jsonl", [])
            store.write_jsonl(1, "wrong.jsonl", [{"text": "wake me at six", "label": "alarm"}])
            store.write_jsonl(1, "accepted.jsonl", [{"text": "a new one", "label": "alarm"}])
            store.write_jsonl(1, "rejected.jsonl", [])

    with pytest.raises(Stop):
        effect(config, [], [0], tmp_path / "fx", Console(quiet=True), execute)
    record = tmp_path / "fx" / "seed_0" / "llm2llm.json"
    assert json.loads(record.read_text())["details"] == [
        {"iteration": 1, "parents": {"alarm": 1}, "accepted": {"alarm": 1}, "reasons": {}}]
    texts = {r["text"] for r in map(json.loads, Path(intent_files[0]).read_text().splitlines())}
    assert not any(t in record.read_text() for t in texts)  # "wake me at six" above included: only its label is kept
    for arm in ("llm2llm", "random"):  # the next machine has neither run dir
        shutil.rmtree(tmp_path / "fx" / "seed_0" / arm, ignore_errors=True)
    summary = effect(config, [], [0], tmp_path / "fx", Console(quiet=True), execute)
    zero = {"train_ids": ["s1"], "pred_seed": [{"id": "s1", "answer": "alarm", "correct": True}], "pred_test": []}
    assert json.loads(record.read_text())["iteration_0"] == zero  # the predictions' ids and labels, not the reply
    # the next machine's random arm takes iteration 0 from the record
    assert calls == [("llm2llm", None, None, None), ("random", [4, 3], True, zero), ("random", [4, 3], False, zero)]
    assert summary["accuracy"]["llm2llm"]["values"] == [pytest.approx(0.7)]
    assert summary["accuracy"]["plain"]["values"] == [0.5] and summary["accuracy"]["random"]["values"] == [0.5]
    assert summary["distributions"][0] == {"arm": "llm2llm", "iteration": 1, "parents": {"alarm": 1},
                                           "accepted": {"alarm": 1}, "reasons": {}}
    (tmp_path / "fx" / "seed_0" / "summary.json").unlink()
    with pytest.raises(UserError, match=r"seed_0/llm2llm.json: holds a seed sample run with a different config "
                                        r"\(student.lr\)"):
        effect(config, ["student.lr=0.5"], [0], tmp_path / "fx", Console(quiet=True), execute)
