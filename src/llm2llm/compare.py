"""The paper's comparison: plain fine-tuning (iteration 0), LLM2LLM, and random augmentation with the same
teacher calls, on one seed sample (`compare_once`) or over several (`effect`: mean and spread).

Both arms share iteration 0: the random arm reads the LLM2LLM run's training set and predictions for it
instead of training and evaluating the same model again.
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

from rich.console import Console

from .config import load_config
from .store import RunStore, atomic_write

ARMS = ("plain", "llm2llm", "random")


def compare_once(config: Path, overrides: list[str], out: Path, console: Console, execute) -> dict:
    """Run both arms into out/llm2llm and out/random; their metrics."""
    cfg = load_config(config, overrides)
    execute(cfg, out / "llm2llm")
    ours = RunStore(out / "llm2llm").metrics()
    counts = ",".join(str(m["generated"] // cfg.teacher.samples_per_example) for m in ours[:-1])
    rand = load_config(config, [*overrides, "loop.augment=random", f"loop.random_counts=[{counts}]"])
    execute(rand, out / "random", baseline=RunStore(out / "llm2llm"))
    return {"llm2llm": ours, "random": RunStore(out / "random").metrics()}


def final_accuracy(rows: list[dict], arm: str) -> float:
    return rows[0]["test_accuracy"] if arm == "plain" else rows[-1]["test_accuracy"]


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "values": values}


def summarise(runs: dict[int, dict], seconds: dict[int, float]) -> dict:
    """Mean and spread of test accuracy per arm and of LLM2LLM's gain over plain fine-tuning, and LLM2LLM's
    per-iteration figures (mean over seeds)."""
    seeds = sorted(runs)
    acc = {arm: spread([final_accuracy(runs[s]["llm2llm" if arm != "random" else "random"], arm) for s in seeds])
           for arm in ARMS}
    gain = {arm: spread([final_accuracy(runs[s][arm], arm) - runs[s]["llm2llm"][0]["test_accuracy"] for s in seeds])
            for arm in ("llm2llm", "random")}
    per_iter = []
    for arm in ("llm2llm", "random"):
        for it in range(min(len(runs[s][arm]) for s in seeds)):
            rows = [runs[s][arm][it] for s in seeds]
            per_iter.append({"arm": arm, "iteration": it, **{k: statistics.fmean(r.get(k, 0) for r in rows) for k in (
                "test_accuracy", "seed_accuracy", "train_size", "wrong", "generated", "proposed", "accepted",
                "rejected", "judged_out")}})
    return {"seeds": seeds, "accuracy": acc, "gain": gain, "iterations": per_iter,
            "llm2llm_iterations": sorted({runs[s]["llm2llm"][-1]["iteration"] for s in seeds}),
            "minutes_per_seed": {s: round(seconds[s] / 60, 1) for s in seeds}}


def markdown(summary: dict, title: str) -> str:
    acc, gain = summary["accuracy"], summary["gain"]
    n = len(summary["seeds"])
    lines = [f"### {title}", "", f"Test accuracy over {n} seed samples (sampling seeds {summary['seeds']}): "
             "mean ± standard deviation [min, max]; gain = the arm's accuracy minus plain fine-tuning's, per seed.", "",
             "| method | test accuracy | gain over plain | per seed |", "|---|---|---|---|"]
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
    lines += ["", "Per iteration, mean over seeds (calls = teacher calls; proposed = examples in the replies; "
              "judged out = rejected by the label/answer judge):", "",
              "| arm | iter | train size | seed acc | test acc | wrong | calls | proposed | accepted | rejected | judged out |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in summary["iterations"]:
        lines.append(f"| {r['arm']} | {r['iteration']} | {r['train_size']:.1f} | {r['seed_accuracy']:.3f} | "
                     f"{r['test_accuracy']:.3f} | {r['wrong']:.1f} | {r['generated']:.1f} | {r['proposed']:.1f} | "
                     f"{r['accepted']:.1f} | {r['rejected']:.1f} | {r['judged_out']:.1f} |")
    minutes = summary["minutes_per_seed"]
    lines += ["", f"Wall time per seed sample (both arms): {', '.join(f'{m} min' for m in minutes.values())}."]
    return "\n".join(lines) + "\n"


def effect(config: Path, overrides: list[str], seeds: list[int], out: Path, console: Console, execute) -> dict:
    """compare_once for each sampling seed (the student's training seed follows it) into out/seed_N;
    the summary is written to out/effect.json and out/effect.md."""
    runs, seconds = {}, {}
    for seed in seeds:
        console.rule(f"seed sample {seed}")
        t0 = time.time()
        runs[seed] = compare_once(config, [*overrides, f"data.sampling_seed={seed}", f"student.seed={seed}"],
                                  out / f"seed_{seed}", console, execute)
        seconds[seed] = time.time() - t0
    summary = summarise(runs, seconds)
    atomic_write(out / "effect.json", json.dumps(summary, indent=1) + "\n")
    atomic_write(out / "effect.md", markdown(summary, f"{config.name}"))
    from .report import write_report

    for seed in seeds:  # each run's report now states the gain's spread over the seed samples
        for arm in ("llm2llm", "random"):
            write_report(out / f"seed_{seed}" / arm)
    return summary
