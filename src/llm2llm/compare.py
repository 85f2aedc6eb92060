"""The paper's comparison: plain fine-tuning (iteration 0), LLM2LLM, and random augmentation with the same
teacher calls, on one seed sample (`compare_once`) or over several (`effect`: mean and spread, and paired
differences per seed sample with a 95% paired-t interval).

Both arms share iteration 0: the random arm reads the LLM2LLM run's training set and predictions for it (from its
run dir, or from its record where the run dir went with another machine) instead of training and evaluating the
same model again.
"""
from __future__ import annotations

import json
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from . import UserError
from .config import changed_fields, load_config, portable
from .filters import category
from .store import RunStore, atomic_write, read_record
from .tasks import make_task
from .teacher.cache import take_replies

ARMS = ("plain", "llm2llm", "random")
PAIRS = (("llm2llm", "plain"), ("llm2llm", "random"), ("random", "plain"))  # paired differences: a - b per seed
NAMES = {"plain": "plain", "llm2llm": "LLM2LLM", "random": "random"}


def compare_once(config: Path, overrides: list[str], out: Path, console: Console, execute, task=None,
                 reuse: Path | None = None) -> dict:
    """Run both arms into out/llm2llm and out/random; their metrics rows and (given the task) arm_details.
    `reuse`: the same seed sample of another study that shares iteration 0 (see `reused`).

    A finished LLM2LLM arm leaves out/llm2llm.json (its rows, arm_details and iteration 0's predictions: numbers and
    labels, no data text), so the random arm can run on another machine, after the run dir is gone, and still take
    iteration 0 from it (a record without the predictions, as older ones are: it trains its own). Where the run
    dir is here, it is run (resumed, or a no-op when finished) and the record written again."""
    cfg = load_config(config, overrides)
    record_path = out / "llm2llm.json"
    if record_path.exists() and not (out / "llm2llm" / "metrics.jsonl").exists():
        kept = read_record(record_path)
        check_config(record_path, kept, portable(cfg))
        ours, ours_details, zero = kept["metrics"], kept["details"], kept.get("iteration_0")
    else:
        started = RunStore(out / "llm2llm").has(0, "accepted.jsonl")  # iteration 0 and its teacher stage done
        execute(cfg, out / "llm2llm", baseline=None if started else reused(reuse, cfg, "llm2llm"))
        ours = RunStore(out / "llm2llm").metrics()
        ours_details = arm_details(RunStore(out / "llm2llm"), task) if task else []
        zero = iteration_zero_record(RunStore(out / "llm2llm"), cfg.task)
        atomic_write(record_path, json.dumps({"config": portable(cfg), "metrics": ours, "details": ours_details,
                                              "iteration_0": zero}, indent=1) + "\n")
    counts = ",".join(str(m["calls"] // cfg.teacher.samples_per_example) for m in ours[:-1])
    rand = load_config(config, [*overrides, "loop.augment=random", f"loop.random_counts=[{counts}]"])
    started = RunStore(out / "random").has(0, "accepted.jsonl")
    cache = reuse / "random" / "cache.sqlite" if reuse and not started else None
    execute(rand, out / "random", baseline=Baseline(RunStore(out / "llm2llm"), zero, cache))
    return {"runs": {"llm2llm": ours, "random": RunStore(out / "random").metrics()},
            "details": {"llm2llm": ours_details, "random": arm_details(RunStore(out / "random"), task) if task else []}}


def check_config(path: Path, kept: dict, cfg: dict) -> None:
    """A one-line error where a record on disk was made with another config (as a run dir's is)."""
    diff = changed_fields(kept.get("config", {}), cfg)
    if diff:
        raise UserError(f"{path}: holds a seed sample run with a different config ({', '.join(diff)}); "
                        "use another output dir")


PREDICTIONS = ("pred_seed", "pred_test")


@dataclass
class Baseline:
    """Where a run takes iteration 0 from (the random arm: the LLM2LLM run dir, else the predictions its record
    keeps), and a teacher cache whose replies it starts with (--reuse: the other study's arm's)."""
    run: RunStore
    record: dict | None = None
    cache: Path | None = None


# what iteration 0 is made of (the seed, the student, its prompts, the judge chosen on the seed and the teacher that
# judge's probe asked): a study that reuses another's iteration 0 must have these as it has
ITERATION_ZERO = ("data", "student", "task", "filters.judge", "filters.judge_probe", "filters.judge_model",
                  "teacher.backend", "teacher.model", "teacher.gguf_file")
AFTER_ITERATION_ZERO = ("task.answer_position",)  # in `task`, but only what the teacher's additions look like


def reused(other: Path | None, cfg, arm: str) -> Baseline | None:
    """`effect --reuse OTHER`: the same seed sample of another study whose iteration 0 is this one's (a variant that
    changes only the teacher stages, e.g. task.answer_position): its LLM2LLM arm's finished iteration 0 (run dir, or
    the predictions its record keeps) and this arm's teacher cache there, so the same model is not trained again and
    no teacher request is paid twice (the calls' tokens still count in this run's rows, as cached calls do). A
    study whose iteration 0 differs, or is not finished, is a one-line error: nothing would be taken."""
    if other is None:
        return None
    record_path, run = other / "llm2llm.json", RunStore(other / "llm2llm")
    if record_path.exists():
        record = read_record(record_path)
        kept, now = record.get("config", {}), portable(cfg)
    elif (kept := run.recorded_config()) is not None:
        record, now = {}, cfg.model_dump(mode="json")
    else:
        raise UserError(f"{other}: no LLM2LLM arm to reuse (neither llm2llm.json nor llm2llm/config.yaml)")
    differ = [d for d in changed_fields(kept, now) if d.startswith(ITERATION_ZERO) and d not in AFTER_ITERATION_ZERO]
    if differ:
        raise UserError(f"{other}: its iteration 0 is not this study's ({', '.join(differ)} differ); "
                        "--reuse takes a study that differs only after iteration 0")
    if not cfg.loop.from_scratch:
        raise UserError("--reuse needs loop.from_scratch: true (a later iteration trains from iteration 0's model, "
                        "which is not taken)")
    finished = run.has(0, "train.jsonl") and run.has(0, "pred_test.jsonl")
    if not finished and not (record.get("iteration_0") and not cfg.teacher.show_student_answer):
        raise UserError(f"{other}: its LLM2LLM arm has no finished iteration 0 to take"
                        + (" (its record keeps no answer text for teacher.show_student_answer)"
                           if record.get("iteration_0") else ""))
    return Baseline(run, record.get("iteration_0"), other / arm / "cache.sqlite")


def iteration_zero_record(store: RunStore, task_cfg) -> dict | None:
    """Iteration 0's predictions for llm2llm.json: the training set's ids and each prediction's id, correctness and
    parsed answer (a label, a number or an option; left out where answers are free text: no text of the data or of
    the student's replies), and the judges' figures on the seed (judges.json: agreements, the probe's spending, the
    judge chosen). None when the run has no evaluated iteration 0."""
    if not all(store.has(0, f"{name}.jsonl") for name in ("train", *PREDICTIONS)):
        return None
    free_text = task_cfg.type == "custom" and task_cfg.checker == "exact"
    keep = ("id", "correct") if free_text else ("id", "answer", "correct")
    return {"train_ids": [r["id"] for r in store.read_jsonl(0, "train.jsonl")],
            **{name: [{k: p[k] for k in keep} for p in store.read_jsonl(0, f"{name}.jsonl")] for name in PREDICTIONS},
            **({"judges": store.read_json(0, "judges.json")} if store.has(0, "judges.json") else {})}


def take_iteration_zero(store: RunStore, baseline: Baseline, seed: list[dict], shows_answer: bool = False) -> None:
    """The random arm's iteration 0 is the LLM2LLM run's (the same seed sample and student): its training set and
    predictions are copied into `store` instead of training and evaluating the same model again. From the record
    (no run dir here) the predictions have no reply text ("prediction": null), so not where the teacher would be
    shown the student's answer (teacher.show_student_answer): then the arm trains its own. The judge chosen on the
    seed is taken too (iter_000/judges.json, where the run or the record has it): both arms sift with the same judge,
    and the teacher judge's probe of the seed (a few minutes) is not asked again. With `effect --reuse`, the other
    study's replies (baseline.cache) are added to this run's teacher cache."""
    ids = [r["id"] for r in seed]
    run, record = baseline.run, baseline.record
    if baseline.cache is not None and baseline.cache.exists():
        take_replies(baseline.cache, store.cache_path)
    if run.has(0, "pred_test.jsonl") and [r["id"] for r in run.read_jsonl(0, "train.jsonl")] == ids:
        rows = {name: run.read_jsonl(0, f"{name}.jsonl") for name in ("train", *PREDICTIONS)}
        judges = run.read_json(0, "judges.json") if run.has(0, "judges.json") else None
    elif record and record["train_ids"] == ids:
        rows = {} if shows_answer else \
            {"train": seed, **{name: [{"prediction": None, **p} for p in record[name]] for name in PREDICTIONS}}
        judges = record.get("judges")
    else:
        return
    for name, kept in rows.items():
        if not store.has(0, f"{name}.jsonl"):
            store.write_jsonl(0, f"{name}.jsonl", kept)
    if judges is not None and not store.has(0, "judges.json"):
        store.write_json(0, "judges.json", judges)


def final_accuracy(rows: list[dict], arm: str) -> float:
    return rows[0]["test_accuracy"] if arm == "plain" else rows[-1]["test_accuracy"]


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with df degrees of freedom (scipy: a dependency of
    sentence-transformers and datasketch, so always installed)."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def paired(diffs: list[float]) -> dict:
    """Mean, sd and 95% paired-t interval of per-seed-sample differences, and what they say: "no detectable
    difference" where the interval covers 0 (or there is one seed sample, so no interval), else higher/lower."""
    n, mean = len(diffs), statistics.fmean(diffs)
    sd = statistics.stdev(diffs) if n > 1 else 0.0
    half = t975(n - 1) * sd / math.sqrt(n) if n > 1 else None
    low, high = (mean - half, mean + half) if half is not None else (None, None)
    if low is None or low <= 0 <= high:
        verdict = "no detectable difference"
    else:
        verdict = "higher" if low > 0 else "lower"
    return {"n": n, "mean": mean, "sd": sd, "low": low, "high": high, "verdict": verdict, "values": diffs}


def kind_of(task, ex: dict) -> str:
    """What an example is, for the distribution of what the teacher was given and what was kept:
    classification: its label; choice: the index of the right option; math: the worked solution's steps (lines
    before "####", 5 or more counted together)."""
    if task.cfg.type == "math" or task.cfg.checker == "number":
        head = str(ex.get(task.output_field, "")).split("####")[0]
        steps = sum(1 for line in head.splitlines() if line.strip())
        return f"{steps} steps" if steps < 5 else "5+ steps"
    if task.cfg.type == "choice" or task.cfg.checker == "choice":
        return f"option {ex.get(task.output_field)}"
    return str(ex.get(task.output_field))


def arm_details(store: RunStore, task) -> list[dict]:
    """Per iteration with a teacher stage: the kinds of the examples sent to the teacher (the wrong ones, or the
    random arm's chosen ones) and of the accepted ones, and the rejected replies by reason (filters.category)."""
    out = []
    for m in store.metrics():
        it = m["iteration"]
        if not store.has(it, "accepted.jsonl"):
            continue
        sent = store.read_jsonl(it, "chosen.jsonl" if store.has(it, "chosen.jsonl") else "wrong.jsonl")
        out.append({"iteration": it, "parents": dict(Counter(kind_of(task, ex) for ex in sent)),
                    "accepted": dict(Counter(kind_of(task, ex) for ex in store.read_jsonl(it, "accepted.jsonl"))),
                    "reasons": dict(Counter(category(r["reason"]) for r in store.read_jsonl(it, "rejected.jsonl")))})
    return out


def _per_iteration(runs: dict[int, dict], seeds: list[int]) -> list[dict]:
    """Each arm's per-iteration figures, mean over seed samples; tokens are the teacher's (and judge's), minutes
    the iteration's training, evaluation and teacher time."""
    per_iter = []
    for arm in ("llm2llm", "random"):
        for it in range(min(len(runs[s][arm]) for s in seeds)):
            rows = [runs[s][arm][it] for s in seeds]
            per_iter.append({"arm": arm, "iteration": it, **{k: statistics.fmean(r.get(k, 0) for r in rows) for k in (
                "test_accuracy", "seed_accuracy", "train_size", "wrong", "calls", "proposed", "accepted",
                "rejected", "near_duplicates", "test_overlap", "not_examples", "judged_out")},
                "tokens": statistics.fmean(r.get("prompt_tokens", 0) + r.get("completion_tokens", 0) for r in rows),
                "minutes": statistics.fmean(sum(r.get(k, 0) for k in ("train_s", "eval_s", "teacher_s"))
                                            for r in rows) / 60})
    return per_iter


def _distributions(details: dict[int, dict], seeds: list[int]) -> list[dict]:
    """Kinds sent to the teacher and kinds accepted, and rejects by reason, per arm and iteration, summed over seeds."""
    out = []
    for arm in ("llm2llm", "random"):
        its = sorted({d["iteration"] for s in seeds for d in details.get(s, {}).get(arm, [])})
        for it in its:
            found = [d for s in seeds for d in details.get(s, {}).get(arm, []) if d["iteration"] == it]
            out.append({"arm": arm, "iteration": it,
                        **{k: dict(sum((Counter(d[k]) for d in found), Counter())) for k in ("parents", "accepted",
                                                                                             "reasons")}})
    return out


def stage_seconds(arms: dict[str, list[dict]]) -> float:
    """A seed sample's training, evaluation and teacher seconds over both arms' rows (they add up across resumes)."""
    return sum(r.get(k, 0) for rows in arms.values() for r in rows for k in ("train_s", "eval_s", "teacher_s"))


def summarise(runs: dict[int, dict], seconds: dict[int, float], details: dict[int, dict] | None = None) -> dict:
    """Mean and spread of test accuracy per arm and of each arm's gain over plain fine-tuning, the paired
    differences between arms per seed sample with 95% intervals, per-iteration figures (mean over seeds), and
    (from `details`: seed -> arm -> arm_details) the kinds sent and accepted per iteration (sum over seeds)."""
    seeds = sorted(runs)
    final = {arm: [final_accuracy(runs[s]["llm2llm" if arm != "random" else "random"], arm) for s in seeds]
             for arm in ARMS}
    acc = {arm: spread(final[arm]) for arm in ARMS}
    gain = {arm: spread([final_accuracy(runs[s][arm], arm) - runs[s]["llm2llm"][0]["test_accuracy"] for s in seeds])
            for arm in ("llm2llm", "random")}
    pairs = {f"{a}-{b}": paired([x - y for x, y in zip(final[a], final[b])]) for a, b in PAIRS}
    stage_s = {s: stage_seconds(runs[s]) for s in seeds}
    by_stage = {name: round(sum(r.get(k, 0) for s in seeds for arm in ("llm2llm", "random")
                                for r in runs[s][arm]) / 60, 1)
                for name, k in (("training", "train_s"), ("evaluation", "eval_s"), ("teacher", "teacher_s"))}
    return {"seeds": seeds, "accuracy": acc, "gain": gain, "paired": pairs, "iterations": _per_iteration(runs, seeds),
            "distributions": _distributions(details or {}, seeds),
            "llm2llm_iterations": sorted({runs[s]["llm2llm"][-1]["iteration"] for s in seeds}),
            "minutes_per_seed": {s: round(seconds[s] / 60, 1) for s in seeds},
            "stage_minutes_per_seed": {s: round(stage_s[s] / 60, 1) for s in seeds}, "stage_minutes": by_stage}


def markdown(summary: dict, title: str) -> str:
    acc, gain = summary["accuracy"], summary["gain"]
    n = len(summary["seeds"])
    lines = [f"### {title}", "", f"Test accuracy over {n} seed samples (sampling seeds {summary['seeds']}): "
             "mean ± standard deviation [min, max]; vs plain = the arm's accuracy minus plain fine-tuning's, per seed "
             "(mean ± sd; the paired intervals below say whether it is a difference at all).", "",
             "| method | test accuracy | vs plain | per seed |", "|---|---|---|---|"]
    done = summary["llm2llm_iterations"]  # the iteration each seed's final accuracy is from (a budget may stop it)
    count = str(done[0]) if len(done) == 1 else f"{done[0]}-{done[-1]}"
    names = {"plain": "plain fine-tuning (iteration 0)",
             "llm2llm": f"LLM2LLM ({count} iteration{'' if done == [1] else 's'})",
             "random": "random augmentation (same teacher calls)"}
    for arm in ARMS:
        a = acc[arm]
        g = f"{gain[arm]['mean']:+.3f} ± {gain[arm]['sd']:.3f}" if arm in gain else "—"
        lines.append(f"| {names[arm]} | {a['mean']:.3f} ± {a['sd']:.3f} [{a['min']:.3f}, {a['max']:.3f}] | {g} | "
                     + ", ".join(f"{v:.3f}" for v in a["values"]) + " |")
    lines += paired_lines(summary)
    lines += ["", "Per iteration, mean over seeds (calls = teacher calls; proposed = examples in the replies; "
              "rejected by reason: dup = (near-)duplicate, overlap = overlaps the test set, not ex. = chatter or "
              "no example, judged out = rejected by the label/answer judge; tokens = teacher and judge tokens; "
              "min = training, evaluation and teacher minutes):", "",
              "| arm | iter | train size | seed acc | test acc | wrong | calls | proposed | accepted | rejected | "
              "dup | overlap | not ex. | judged out | tokens | min |", "|---" * 16 + "|"]
    for r in summary["iterations"]:
        lines.append(f"| {r['arm']} | {r['iteration']} | {r['train_size']:.1f} | {r['seed_accuracy']:.3f} | "
                     f"{r['test_accuracy']:.3f} | " + " | ".join(f"{r.get(k, 0):.1f}" for k in (
                         "wrong", "calls", "proposed", "accepted", "rejected", "near_duplicates", "test_overlap",
                         "not_examples", "judged_out")) + f" | {r.get('tokens', 0):,.0f} | {r.get('minutes', 0):.1f} |")
    lines += distribution_lines(summary)
    minutes, stages = summary["minutes_per_seed"], summary.get("stage_minutes_per_seed", {})
    lines += ["", f"Wall time per seed sample (both arms, in the invocation that ran them): "
              f"{', '.join(f'{m} min' for m in minutes.values())}"
              + (f"; training, evaluation and teacher time recorded in the run dirs (kept across resumes): "
                 f"{', '.join(f'{m} min' for m in stages.values())}" if stages else "") + "."]
    if summary.get("stage_minutes"):
        lines[-1] += (" Where the time went, summed over seed samples and arms: "
                      + ", ".join(f"{name} {m} min" for name, m in summary["stage_minutes"].items())
                      + " (the teacher's includes the judge's calls; the rest is loading models and the judges' seed probe).")
    return "\n".join(lines) + "\n"


def paired_lines(summary: dict) -> list[str]:
    """The paired differences table; its last column follows the rule: an interval covering 0 (or no interval, with
    one seed sample) reads "no detectable difference", never a gain."""
    lines = ["", f"Paired differences in final test accuracy per seed sample (a - b on the same seed sample and test "
             f"set), with a 95% paired-t interval (mean ± t(0.975, n-1) · sd / √n, n = {len(summary['seeds'])}):", "",
             "| difference | mean | sd | 95% interval | per seed | reading |", "|---|---|---|---|---|---|"]
    for key, p in summary.get("paired", {}).items():
        a, b = key.split("-")
        interval = f"[{p['low']:+.3f}, {p['high']:+.3f}]" if p["low"] is not None else "— (one seed sample)"
        reading = p["verdict"] if p["verdict"] == "no detectable difference" else f"{NAMES[a]} {p['verdict']}"
        lines.append(f"| {NAMES[a]} - {NAMES[b]} | {p['mean']:+.3f} | {p['sd']:.3f} | {interval} | "
                     + ", ".join(f"{v:+.3f}" for v in p["values"]) + f" | {reading} |")
    return lines


def distribution_lines(summary: dict) -> list[str]:
    if not summary.get("distributions"):
        return []
    lines = ["", "What each arm sent to the teacher (LLM2LLM: the wrong seed examples; random: its random picks) and "
             "what it kept, by label or kind, and the rejected replies by reason; sums over the seed samples:", "",
             "| arm | iter | sent to the teacher | accepted | rejected by reason |", "|---|---|---|---|---|"]
    for d in summary["distributions"]:
        cells = [", ".join(f"{k}: {v}" for k, v in sorted(d[part].items())) or "—"
                 for part in ("parents", "accepted", "reasons")]
        lines.append(f"| {d['arm']} | {d['iteration']} | " + " | ".join(cells) + " |")
    return lines


def seed_sample(config: Path, overrides: list[str], out: Path, console: Console, execute, task,
                reuse: Path | None = None) -> dict:
    """Both arms on one seed sample (into out/llm2llm and out/random): their metrics rows, arm_details and seconds.

    When both are done these figures (numbers and labels, none of the data's text) are written to out/summary.json
    with the config (config.portable: data files by content, not place); a later `effect` reads them from there, so a study still counts a seed sample whose run dirs
    are gone (made on another machine, or removed to save space). A summary.json written with another config is a
    one-line error, as a run dir's is."""
    path, cfg = out / "summary.json", portable(load_config(config, overrides))
    if path.exists():
        kept = read_record(path)
        check_config(path, kept, cfg)
        return kept
    t0 = time.time()
    done = compare_once(config, overrides, out, console, execute, task, reuse)
    record = {"config": cfg, "runs": done["runs"], "seconds": time.time() - t0, "details": done["details"]}
    atomic_write(path, json.dumps(record, indent=1) + "\n")
    return record


def effect(config: Path, overrides: list[str], seeds: list[int], out: Path, console: Console, execute,
           reuse: Path | None = None) -> dict:
    """Both arms on each sampling seed (the student's training seed follows it) into out/seed_N (seed_sample);
    the summary is written to out/effect.json and out/effect.md. `reuse`: another study's folder whose seed
    samples share this one's iteration 0 (`reused`)."""
    runs, seconds, details = {}, {}, {}
    task = make_task(load_config(config, overrides).task)  # only its fields and type: for kind_of
    lacking = [str(s) for s in seeds if reuse and not (out / f"seed_{s}" / "summary.json").exists()
               and not (reuse / f"seed_{s}").is_dir()]
    if lacking:
        raise UserError(f"--reuse {reuse}: it has no seed sample {', '.join(lacking)} (no seed_N folder)")
    for seed in seeds:
        console.rule(f"seed sample {seed}")
        done = seed_sample(config, [*overrides, f"data.sampling_seed={seed}", f"student.seed={seed}"],
                           out / f"seed_{seed}", console, execute, task, reuse and reuse / f"seed_{seed}")
        runs[seed], seconds[seed], details[seed] = done["runs"], done["seconds"], done["details"]
    summary = summarise(runs, seconds, details)
    atomic_write(out / "effect.json", json.dumps(summary, indent=1) + "\n")
    atomic_write(out / "effect.md", markdown(summary, f"{config.name}"))
    from .report import write_report

    for seed in seeds:  # each run's report (where its run dir is here) now states the gain's spread
        for arm in ("llm2llm", "random"):
            if (out / f"seed_{seed}" / arm / "metrics.jsonl").exists():
                write_report(out / f"seed_{seed}" / arm)
    return summary
