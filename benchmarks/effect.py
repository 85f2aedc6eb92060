"""Does the loop help? Plain fine-tuning vs LLM2LLM vs random augmentation with the same teacher calls, over
several seed samples, per task; the tables go into docs/results.md between markers, unedited, with the command,
the commit and the wall time.

Tasks are config stems in benchmarks/effect/. The default is the strong-teacher study (issue 14): SST-2, the
6-intent task, CaseHOLD and GSM8K with Qwen2.5-Coder-1.5B on llama.cpp as teacher, five seed samples, written
between <!-- effect:strong:begin --> and <!-- effect:strong:end --> of docs/results.md:

    python benchmarks/effect.py                       # the whole study: many hours on 2 CPU cores
    python benchmarks/effect.py --tables-only         # rewrite the docs block from what is on disk, run nothing
    python benchmarks/effect.py --smoke --tasks intent_strong   # wiring check: 1 seed, 1 iteration, tiny sizes
    python benchmarks/effect.py --tasks intent,sst2,gsm8k --seeds 0,1,2 --out runs/effect   # the first comparison

Each task runs `llm2llm effect` into OUT/<task>; each seed sample's two runs are run dirs
(OUT/<task>/seed_N/{llm2llm,random}) that `llm2llm effect` continues where they stopped, so rerunning the same
command resumes a stopped study; a task whose OUT/<task>/effect.json already covers the seeds is not run again.
The wall time of every invocation that ended (not one killed with its machine) is kept in OUT/<task>/wall.json and
summed. Each seed sample's summary.json holds its rows' training, evaluation and teacher seconds, which add up across
resumes ("stages" in the status table), and the wall time of the invocation that finished it.

A study outlives the machine it runs on through git: the study's default OUT is benchmarks/effect/study, where
.gitignore leaves out the run dirs (they hold the benchmark's texts and the models) but not the figures: each
finished seed sample's OUT/<task>/seed_N/summary.json (numbers and labels only), effect.json, effect.md and
wall.json. Commit them as seed samples finish; on a fresh clone the same command counts the committed seed
samples from their summaries and runs only the rest. A seed sample unfinished when its machine goes is carried by
benchmarks/study_state.py: `save` packs its run dirs without the benchmark's texts into seed_N/<arm>.state.gz (commit
them), and this command unpacks them on a fresh clone before it runs the task. The study's block lists every study
task with a folder in OUT, whatever --tasks names. Tasks that are not all *_strong
write no docs block unless --marker is given (so the first comparison's command leaves the study's block alone).

Final line: name=value figures: per task the paired LLM2LLM - random and LLM2LLM - plain means with their 95%
intervals, and the task's wall minutes.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from llm2llm import fail  # noqa: E402
from llm2llm.compare import stage_seconds  # noqa: E402
from llm2llm.store import atomic_write  # noqa: E402  (the worktree's own package, as the subprocesses use)

sys.path.insert(0, str(ROOT))
from benchmarks import study_state  # noqa: E402

STRONG = "sst2_strong,intent_strong,casehold_strong,gsm8k_strong"
# the wiring check: one seed sample, one iteration, 8 seed examples, 24 test examples, few judge probes
SMOKE = ["loop.iterations=1", "data.seed_size=8", "data.test_size=24", "student.epochs=1", "filters.judge_probe=4"]


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    return head.strip() + (" with uncommitted changes" if dirty else "")


def run_task(name: str, seeds: str, overrides: list[str], out: Path, commit: str) -> int:
    """`llm2llm effect` for one task (skipped when its effect.json covers the seeds); its minutes go to wall.json."""
    summary = out / "effect.json"
    wanted = [int(s) for s in seeds.split(",")]
    if summary.exists() and json.loads(summary.read_text())["seeds"] == wanted:
        print(f"{name}: done ({summary}); delete it to run the task again", flush=True)
        return 0
    if any(out.glob("seed_*/*.state.gz")):  # a study carried over from another machine; run dirs there are kept
        study_state.load(out, study_state.Redactor(study_state.DataTexts(study_state.data_files(name))))
    cmd = [sys.executable, "-m", "llm2llm.cli", "effect", str(ROOT / "benchmarks" / "effect" / f"{name}.yaml"),
           "--seeds", seeds, "--out", str(out), *[x for item in overrides for x in ("--set", item)]]
    print("$", shlex.join(cmd), flush=True)
    t0, rc = time.time(), 130
    try:
        child = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        try:
            rc = child.wait()
        except KeyboardInterrupt:  # the child stops on its own Ctrl-C (run dirs stay resumable): pass it on, wait
            child.send_signal(signal.SIGINT)
            rc = child.wait()
    finally:
        walls = json.loads((out / "wall.json").read_text()) if (out / "wall.json").exists() else []
        walls.append({"minutes": round((time.time() - t0) / 60, 1), "commit": commit, "exit": rc,
                      "at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        atomic_write(out / "wall.json", json.dumps(walls, indent=1) + "\n")
    return rc


def task_status(name: str, seeds: str, out: Path) -> tuple[str, str]:
    """(status, wall time) of one task from what is on disk."""
    walls = json.loads((out / "wall.json").read_text()) if (out / "wall.json").exists() else []
    seed_dirs = sorted(out.glob("seed_*"), key=lambda p: (len(p.name), p.name))  # seed_2 before seed_10
    done = [p.name for p in seed_dirs if (p / "summary.json").exists()]
    summaries = [json.loads((out / name / "summary.json").read_text()) for name in done]
    wall = "—"
    if walls or summaries:  # a seed sample's summary outlives an invocation killed with its machine
        # stages: the rows' training, evaluation and teacher seconds, which add up across resumes; a seed sample's
        # own "seconds" is the wall time of the invocation that finished it only
        stages = sum(stage_seconds(s.get("runs", {})) for s in summaries)
        wall = (f"stages {stages / 60:.1f} min in {len(summaries)} seed sample(s) (finishing invocations "
                f"{sum(s['seconds'] for s in summaries) / 60:.1f} min); "
                f"{len(walls)} invocation(s) recorded, {sum(w['minutes'] for w in walls):.1f} min")
    if (out / "effect.json").exists() and json.loads((out / "effect.json").read_text())["seeds"] == \
            [int(s) for s in seeds.split(",")]:
        return "done", wall
    started = [p.name for p in seed_dirs if p.name not in done]
    parts = [f"{', '.join(names)} {what}" for names, what in ((done, "done"), (started, "started")) if names]
    return (f"stopped or running: {'; '.join(parts)}" if parts else "not yet run"), wall


def block(tasks: list[str], seeds: str, out: Path, command: str, commit: str) -> str:
    """The docs block: command, commit, a status line per task, and each finished task's effect.md, unedited."""
    lines = [f"Written by `benchmarks/effect.py` at commit {commit} on "
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, with:", "", "```bash", command, "```", "",
             "| task | config | status | wall time |", "|---|---|---|---|"]
    for name in tasks:
        status, wall = task_status(name, seeds, out / name)
        lines.append(f"| {name} | benchmarks/effect/{name}.yaml | {status} | {wall} |")
    for name in tasks:
        if (out / name / "effect.md").exists() and task_status(name, seeds, out / name)[0] == "done":
            lines += ["", (out / name / "effect.md").read_text().rstrip()]
    return "\n".join(lines)


def write_block(path: Path, marker: str, text: str) -> None:
    """Replace what lies between the marker comments in path (a new file is made with them)."""
    begin, end = f"<!-- effect:{marker}:begin -->", f"<!-- effect:{marker}:end -->"
    old = path.read_text(encoding="utf-8") if path.exists() else f"{begin}\n{end}\n"
    if begin not in old or end not in old or old.index(begin) > old.index(end):
        fail(f"error: {path}: no '{begin}' ... '{end}' markers: add them where the tables belong")
    head, rest = old.split(begin, 1)
    atomic_write(path, f"{head}{begin}\n{text}\n{end}{rest.split(end, 1)[1]}")
    print(f"written: {path} (between the effect:{marker} markers)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=STRONG, help="config stems in benchmarks/effect/, comma-separated")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--out", type=Path, default=None,
                        help="default benchmarks/effect/study (smoke: runs/effect-smoke)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a config override, each task")
    parser.add_argument("--results", type=Path, default=None, help="default docs/results.md (smoke: OUT/results.md)")
    parser.add_argument("--marker", default=None, help="docs block name (default: strong, when all tasks are *_strong)")
    parser.add_argument("--smoke", action="store_true", help=f"seeds 0 and {' '.join(SMOKE)}")
    parser.add_argument("--tables-only", action="store_true",
                        help="run nothing: write the docs block from what is on disk (each task's status and tables)")
    args = parser.parse_args()
    command = shlex.join(["python", "benchmarks/effect.py", *sys.argv[1:]])
    commit = git_commit()  # the code this invocation runs, read before it writes anything (it writes results.md)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    seeds = "0" if args.smoke else args.seeds
    overrides = [*SMOKE, *args.overrides] if args.smoke else args.overrides
    out = args.out or (ROOT / "runs" / "effect-smoke" if args.smoke else ROOT / "benchmarks" / "effect" / "study")
    results = args.results or (out / "results.md" if args.smoke else ROOT / "docs" / "results.md")
    marker = args.marker or ("strong" if all(t.endswith("_strong") for t in tasks) else None)
    # the study's block keeps every study task found in OUT: a command for one task does not drop the others' tables
    shown = [t for t in STRONG.split(",") if t in tasks or (out / t).is_dir()] if marker == "strong" else []
    shown += [t for t in tasks if t not in shown]
    if args.tables_only:
        if not marker:
            parser.error("--tables-only writes a docs block: give --marker (the tasks are not all *_strong)")
        write_block(results, marker, block(shown, seeds, out, command, commit))
        return
    figures, failed = [], 0
    for name in tasks:
        failed = run_task(name, seeds, overrides, out / name, commit)
        if marker:
            write_block(results, marker, block(shown, seeds, out, command, commit))
        if failed:
            fail(f"error: {name}: `llm2llm effect` exited with {failed}; rerun the same command to continue",
                 failed if 0 < failed < 256 else 1)
        paired = json.loads((out / name / "effect.json").read_text()).get("paired", {})
        for key in ("llm2llm-random", "llm2llm-plain"):
            p = paired[key]
            interval = f"[{p['low']:+.3f},{p['high']:+.3f}]" if p["low"] is not None else "[n=1]"
            figures.append(f"{name}_{key}={p['mean']:+.3f}{interval}")
        figures.append(f"{name}_minutes={task_status(name, seeds, out / name)[1].split(' ')[0]}")
    print(" ".join(figures))


if __name__ == "__main__":
    main()
