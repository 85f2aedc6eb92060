"""What each arm of an effect study sent to the teacher and kept, per seed sample, from the committed records alone
(seed_N/summary.json, or seed_N/llm2llm.json for a seed sample whose random arm is still to run): no run dir needed.

Per seed sample and arm, summed over the teacher stages: the parents' labels or kinds (LLM2LLM: the wrong seed
examples; random: its picks), the accepted examples' labels or kinds, the rejected ones by reason, and the judge's
keep rate (accepted / (accepted + judged out): how much of what reached the judge it let through); then test
accuracy by iteration. For a classification or choice task whose run dirs are still on disk (they are not
committed), also the student's test answers by label or option per iteration, each with the share of them that is
right (iteration 0 of a random arm that took it from the LLM2LLM record: from that record). Writes nothing.

    python benchmarks/study_details.py benchmarks/effect/study/casehold_strong
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from llm2llm import fail  # noqa: E402
from llm2llm.store import read_record, read_records  # noqa: E402


def arms(seed_dir: Path) -> dict:
    """{arm: (metrics rows, details)} from the seed sample's summary, else from its LLM2LLM arm's record."""
    if (seed_dir / "summary.json").exists():
        done = read_record(seed_dir / "summary.json")
        return {arm: (done["runs"][arm], done["details"][arm]) for arm in ("llm2llm", "random")}
    if (seed_dir / "llm2llm.json").exists():
        done = read_record(seed_dir / "llm2llm.json")
        return {"llm2llm": (done["metrics"], done["details"])}
    return {}


def answers_on_test(seed_dir: Path, arm: str) -> list[str]:
    """Per iteration of the arm's run dir: each answer given on the test set, how often, and the share of it right."""
    run_dir, lines = seed_dir / arm, []
    for it_dir in sorted(run_dir.glob("iter_*")):
        preds_file = it_dir / "pred_test.jsonl"
        if preds_file.exists():
            preds = read_records(preds_file)
        elif it_dir.name == "iter_000" and (seed_dir / "llm2llm.json").exists():
            preds = read_record(seed_dir / "llm2llm.json").get("iteration_0", {}).get("pred_test", [])
        else:
            continue
        given, right = Counter(str(p["answer"]) for p in preds), Counter(str(p["answer"]) for p in preds if p["correct"])
        lines.append(f"    {it_dir.name}: " + ", ".join(f"{a}: {n} ({right[a] / n:.2f} right)" for a, n in sorted(given.items())))
    return lines


def task_type(seed_dir: Path) -> str | None:
    for name in ("summary.json", "llm2llm.json"):
        if (seed_dir / name).exists():
            return read_record(seed_dir / name)["config"]["task"]["type"]
    return None


def counts(counter: Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items())) or "none"


def main(study: Path) -> None:
    for seed_dir in sorted(study.glob("seed_*"), key=lambda p: int(p.name.split("_")[1])):
        for arm, (rows, details) in arms(seed_dir).items():
            parents, kept, reasons = Counter(), Counter(), Counter()
            for stage in details:
                parents.update(stage["parents"]), kept.update(stage["accepted"]), reasons.update(stage["reasons"])
            judged_out = sum(r["judged_out"] for r in rows)
            accepted = sum(r["accepted"] for r in rows)
            rate = f"{accepted / (accepted + judged_out):.2f}" if accepted + judged_out else "-"
            print(f"{seed_dir.name} {arm}: test " + ", ".join(f"{r['test_accuracy']:.3f}" for r in rows)
                  + f"; {sum(r['calls'] for r in rows)} calls, {accepted} kept, judge keep rate {rate}")
            print(f"  parents: {counts(parents)}\n  kept: {counts(kept)}\n  rejected: {counts(reasons)}")
            if task_type(seed_dir) in ("classification", "choice") and (lines := answers_on_test(seed_dir, arm)):
                print("  test answers (run dir):", *lines, sep="\n")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        fail("usage: python benchmarks/study_details.py STUDY_DIR (e.g. benchmarks/effect/study/casehold_strong)")
    main(Path(sys.argv[1]))
