"""What each arm of an effect study sent to the teacher and what it got back, for a classification task: per seed
sample and arm, the parents (LLM2LLM: the wrong seed examples; random: its picks) and the accepted examples, with
their share of each label, mean length in words and share written all in lower case; how many of iteration 0's
wrong examples are still wrong at the last iteration; and, per iteration, test accuracy and how many test inputs
the student gave each label. Reads the run dirs (they stay on the machine that ran the study), writes nothing.

    python benchmarks/arm_contents.py benchmarks/effect/study/sst2_strong
"""
from __future__ import annotations

import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from llm2llm import fail  # noqa: E402
from llm2llm.store import read_records  # noqa: E402


def read_jsonl(path: Path) -> list[dict]:
    """A run dir's JSONL file (the store's reader: a damaged line is a one-line error), or none where absent."""
    return read_records(path) if path.exists() else []


def describe(rows: list[dict], labels: list[str]) -> str:
    if not rows:
        return "none"
    share = Counter(r["label"] for r in rows)
    words = statistics.fmean(len(r["text"].split()) for r in rows)
    lower = sum(r["text"] == r["text"].lower() for r in rows) / len(rows)
    return (f"{len(rows)}: " + ", ".join(f"{lab} {share[lab] / len(rows):.2f}" for lab in labels)
            + f"; {words:.1f} words; lower case {lower:.2f}")


def main(study: Path) -> None:
    for seed in sorted(study.glob("seed_*"), key=lambda p: int(p.name.split("_")[1])):
        for arm in ("llm2llm", "random"):
            iters = sorted((seed / arm).glob("iter_*"))
            if not iters:
                continue
            labels = sorted({r["label"] for r in read_jsonl(iters[0] / "train.jsonl")})
            parents, accepted = [], []
            for it in iters[:-1]:  # the last iteration makes no teacher call
                parents += read_jsonl(it / ("wrong.jsonl" if arm == "llm2llm" else "chosen.jsonl"))
                accepted += read_jsonl(it / "accepted.jsonl")
            print(f"{seed.name} {arm}: parents {describe(parents, labels)} | accepted {describe(accepted, labels)}")
            curve = []
            for it in iters:
                preds = read_jsonl(it / "pred_test.jsonl")
                if preds:
                    given = Counter(p["answer"] for p in preds)
                    curve.append(f"{sum(p['correct'] for p in preds) / len(preds):.3f} ("
                                 + "/".join(str(given[lab]) for lab in labels) + ")")
            print(f"    test accuracy per iteration (test inputs given {'/'.join(labels)}): {', '.join(curve)}")
            if arm == "llm2llm":
                first = {r["id"] for r in read_jsonl(iters[0] / "wrong.jsonl")}
                last = {r["id"] for r in read_jsonl(iters[-1] / "wrong.jsonl")}
                print(f"    wrong at iteration 0: {len(first)}; of them still wrong at the last: {len(first & last)}"
                      f" (wrong then: {len(last)})")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        fail("usage: python benchmarks/arm_contents.py STUDY_DIR/<task> (a directory with seed_N/{llm2llm,random})")
    main(Path(sys.argv[1]))
