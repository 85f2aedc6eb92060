"""Pick a task's student setting (epochs, learning rate, seed size) on a validation split held out from train,
never on test: the strong-baseline protocol of the strong-teacher study (issue 14).

The rule, written down before any run: every candidate of the grid is plain fine-tuning (iteration 0 of a run,
stopped before any teacher call) trained on a seed sampled from the pool and scored on the validation split. The
chosen candidate has the best validation accuracy (mean over the sampling seeds given); ties go to fewer epochs,
then the smaller seed, then the lower learning rate. The script prints the table, the chosen setting as config
overrides, and how many seed examples the student still gets wrong at it: what the method has to work on (too few
is a finding; the seed size is then the knob to turn, on validation, by rerunning with other --seed-sizes).

The default grid (written down before running): epochs 1, 2, 3 x lr 1e-4, 3e-4 x seed size (the config's, and
twice that).

Pool = the task's training rows minus its test set (when the test set is held out of the same file, as for
CaseHOLD: data.test_seed must fix it), written once to OUT/pool.jsonl. Validation = --val-size rows of the pool,
held out with --val-seed (the same rows for every candidate and sampling seed); each seed is sampled from the rest.
Each candidate and sampling seed is a run dir OUT/e<epochs>-lr<lr>-s<size>-seed<seed> (teacher.budget_tokens=1
and filters.judge=none, so no teacher call is made: the "teacher budget reached" line each candidate prints is that
stop); rerunning continues: finished candidates are read back, from OUT/candidates.json (their figures and
configs, data files named by content; no text of the data) where their run dirs are gone. OUT defaults to
benchmarks/effect/select/<config stem>, where .gitignore leaves out the run dirs and the pool but not the figures:
commit them, and a selection stopped on one machine continues on a fresh clone.

    python benchmarks/select_setting.py benchmarks/effect/intent_strong.yaml --val-size 60 --seeds 0,1
Writes OUT/selection.md and OUT/selection.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from llm2llm import UserError, fail  # noqa: E402
from llm2llm.config import changed_fields, load_config, portable  # noqa: E402
from llm2llm.store import RunStore, atomic_write, read_record  # noqa: E402

LINEAGE = ("origin", "parent_id", "iteration", "teacher_model")


def write_pool(config: Path, overrides: list[str], out: Path) -> tuple[Path, int]:
    """The training rows that are not test rows, as OUT/pool.jsonl (kept: a rerun reads the same pool)."""
    from llm2llm.data import load_splits
    from llm2llm.tasks import make_task

    cfg = load_config(config, overrides)
    if cfg.data.test is None and cfg.data.test_seed is None:
        raise UserError(f"{config}: the test set is held out of train with data.sampling_seed, so it changes with "
                        "the seed; set data.test_seed, or validation could overlap a seed sample's test set")
    pool_path = out / "pool.jsonl"
    if not pool_path.exists():
        data = cfg.data.model_copy(update={"seed_size": None, "seed_fraction": None})
        _, pool, _ = load_splits(data, lambda rows: make_task(cfg.task, rows))
        atomic_write(pool_path, "".join(json.dumps({k: v for k, v in ex.items() if k not in LINEAGE},
                                                   ensure_ascii=False) + "\n" for ex in pool))
    return pool_path, cfg.data.seed_size


def candidate(config: Path, overrides: list[str], setting: dict, seed: int, pool: Path, args, console) -> dict:
    """Iteration 0's figures of one candidate and sampling seed: read back from OUT/candidates.json (figures only,
    committed, so a selection outlives the machine it ran on) or from its run dir, or trained and evaluated now."""
    from llm2llm import loop

    e, lr, size = setting["epochs"], setting["lr"], setting["seed_size"]
    name = f"e{e:g}-lr{lr:g}-s{size}-seed{seed}"
    cfg = load_config(config, [*overrides, f"data.train={pool}", "data.test=null", f"data.test_size={args.val_size}",
                               f"data.test_seed={args.val_seed}", f"data.seed_size={size}", f"data.sampling_seed={seed}",
                               f"student.seed={seed}", f"student.epochs={e}", f"student.lr={lr}", "loop.iterations=1",
                               "teacher.budget_tokens=1", "filters.judge=none", "output.keep_models=none"])
    kept_path, identity = args.out / "candidates.json", portable(cfg)
    kept = read_record(kept_path) if kept_path.exists() else {}
    if name in kept:
        diff = changed_fields(kept[name]["config"], identity)
        if diff:
            raise UserError(f"{kept_path}: {name} was run with a different config ({', '.join(diff)}); "
                            "use another --out")
        return kept[name]["figures"]
    store = RunStore(args.out / name)
    if not store.metrics():
        loop.run(cfg, store, console)
    row = store.metrics()[0]
    figures = {"val_accuracy": row["test_accuracy"], "seed_accuracy": row["seed_accuracy"], "wrong": row["wrong"]}
    atomic_write(kept_path, json.dumps({**kept, name: {"config": identity, "figures": figures}}, indent=1) + "\n")
    return figures


def choose(results: list[dict]) -> dict:
    """The rule: best mean validation accuracy; ties -> fewer epochs, then smaller seed, then lower lr."""
    return min(results, key=lambda r: (-round(r["val_accuracy"], 9), r["epochs"], r["seed_size"], r["lr"]))


def table(results: list[dict], chosen: dict, seeds: list[int]) -> str:
    lines = [f"Validation accuracy, mean over sampling seeds {seeds} (per seed in brackets); wrong = seed examples "
             "the student still gets wrong after training (mean over seeds); * = chosen by the rule.", "",
             "| epochs | lr | seed size | validation accuracy | seed accuracy | wrong |", "|---|---|---|---|---|---|"]
    for r in results:
        mark = " *" if r is chosen else ""
        lines.append(f"| {r['epochs']:g} | {r['lr']:g} | {r['seed_size']} | {r['val_accuracy']:.3f} "
                     f"[{', '.join(f'{v:.3f}' for v in r['per_seed'])}]{mark} | {r['seed_accuracy']:.3f} | "
                     f"{r['wrong']:.1f} of {r['seed_size']} |")
    return "\n".join(lines) + "\n"


def numbers(text: str, kind) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        fail(f"error: '{text}': expected comma-separated numbers")


def main() -> None:
    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--epochs", default="1,2,3")
    parser.add_argument("--lrs", default="1e-4,3e-4")
    parser.add_argument("--seed-sizes", default=None, help="default: the config's seed size and twice it")
    parser.add_argument("--seeds", default="0", help="sampling seeds (each also seeds training)")
    parser.add_argument("--val-size", type=int, default=200)
    parser.add_argument("--val-seed", type=int, default=4321)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/effect/select/<config stem>")
    args = parser.parse_args()
    args.out = args.out or ROOT / "benchmarks" / "effect" / "select" / args.config.stem
    console = Console()
    try:
        pool, size = write_pool(args.config, args.overrides, args.out)
        if not args.seed_sizes and not size:
            raise UserError(f"{args.config}: no data.seed_size: give --seed-sizes")
        sizes = numbers(args.seed_sizes, int) if args.seed_sizes else [size, 2 * size]
        seeds, results = numbers(args.seeds, int), []
        for e in numbers(args.epochs, float):
            for lr in numbers(args.lrs, float):
                for s in sizes:
                    setting = {"epochs": e, "lr": lr, "seed_size": s}
                    runs = [candidate(args.config, args.overrides, setting, seed, pool, args, console) for seed in seeds]
                    results.append({**setting, "per_seed": [r["val_accuracy"] for r in runs],
                                    **{k: statistics.fmean(r[k] for r in runs) for k in runs[0]}})
    except UserError as err:
        fail(f"error: {err}")
    chosen = choose(results)
    text = table(results, chosen, seeds)
    sets = f"--set student.epochs={chosen['epochs']:g} --set student.lr={chosen['lr']:g} --set data.seed_size={chosen['seed_size']}"
    text += (f"\nChosen: {sets} (validation {args.val_size} rows of the pool, val seed {args.val_seed}); at it the "
             f"student still gets {chosen['wrong']:.1f} of {chosen['seed_size']} seed examples wrong.\n")
    atomic_write(args.out / "selection.md", text)
    atomic_write(args.out / "selection.json", json.dumps({"results": results, "chosen": chosen}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
