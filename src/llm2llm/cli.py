"""Command line: `llm2llm run CONFIG`, `resume RUN_DIR`, `report RUN_DIR`, `demo`."""
from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from . import UserError, display, fail

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Grow a small model's training data from its own mistakes (LLM2LLM).")
console = Console()
VERBOSE = typer.Option(False, "--verbose", "-v", help="also show the libraries' progress bars, logs and notices")


def metrics_table(rows: list[dict]) -> Table:
    from .report import metrics_table as cells

    head, body = cells(rows, console=True)
    table = Table(title="LLM2LLM, per iteration (0 = plain fine-tuning)")
    for name in head:
        table.add_column(name, justify="right")
    for row in body:
        table.add_row(*row)
    return table


def _execute(cfg, out: Optional[Path], baseline=None) -> None:
    """Run (or continue) the loop into the run dir, then show the table and the report's lines. `baseline`: where this
    run takes iteration 0 from (compare's random arm: the LLM2LLM run of the same seed sample, or its record)."""
    from . import loop
    from .store import RunStore

    run_dir = Path(out or cfg.output.dir)
    try:
        parts = loop.build(cfg, RunStore(run_dir), console, baseline)
        rows = loop.iterate(parts)
    except KeyboardInterrupt:
        typer.echo(f"interrupted: finished stages are saved; continue with: llm2llm resume {run_dir}", err=True)
        raise typer.Exit(130)
    if rows and rows[-1].get("stopped") == "budget":
        spent = loop.spending(cfg, rows, rows[-1]["iteration"] + 1).describe()
        console.print(f"[yellow]teacher budget reached ({spent}): the run stopped after iteration "
                      f"{rows[-1]['iteration']} and keeps everything made so far. To go on: llm2llm resume {run_dir} "
                      "--set teacher.budget_tokens=N (or teacher.budget_cost=X)[/]")
    console.print(metrics_table(rows))
    from .report import gain_line, projection, write_report

    md, page = write_report(run_dir)
    console.print(gain_line(RunStore(run_dir)))
    console.print(projection(rows, cfg.model_dump(mode="json")))
    console.print(f"run directory: {run_dir}  (report: {page})")


def _guard(fn, *args) -> None:
    try:
        fn(*args)
    except UserError as err:  # one line, never wrapped: a value or a library's message may hold line breaks
        fail(f"error: {err}")


@app.command()
def run(config: Path = typer.Argument(..., help="YAML run config"),
        set_: list[str] = typer.Option([], "--set", help="override a config field: key.sub=value"),
        out: Optional[Path] = typer.Option(None, "--out", help="run directory (default: output.dir)"),
        verbose: bool = VERBOSE):
    """Run the LLM2LLM loop from a config file. Rerunning into the same --out continues a stopped run."""
    from .config import load_config

    display.set_verbose(verbose)
    _guard(lambda: _execute(load_config(config, set_), out))


@app.command()
def resume(run_dir: Path = typer.Argument(..., help="a run directory made by `llm2llm run` or `llm2llm demo`"),
           set_: list[str] = typer.Option([], "--set", help="change a field that does not change results, "
                                          "e.g. teacher.budget_tokens=200000 or teacher.concurrency=32"),
           verbose: bool = VERBOSE):
    """Continue a stopped run from its first unfinished stage, with the config it was started with."""
    from .config import load_config

    display.set_verbose(verbose)
    def go():
        snapshot = run_dir / "config.yaml"
        if not snapshot.exists():
            raise UserError(f"{run_dir}: not an llm2llm run dir (no config.yaml)")
        _execute(load_config(snapshot, set_), run_dir)

    _guard(go)


@app.command()
def compare(config: Path = typer.Argument(..., help="YAML run config"),
            set_: list[str] = typer.Option([], "--set", help="override a config field: key.sub=value"),
            out: Path = typer.Option(Path("runs/compare"), "--out", help="folder for the runs"),
            verbose: bool = VERBOSE):
    """The paper's comparison on one seed set and teacher budget: plain fine-tuning (iteration 0),
    LLM2LLM, and random augmentation (random seed examples to the teacher, as many as LLM2LLM sent)."""
    display.set_verbose(verbose)
    from .compare import compare_once, final_accuracy

    def go():
        runs = compare_once(config, set_, out, console, _execute)["runs"]
        table = Table(title="Plain fine-tuning vs LLM2LLM vs random augmentation (same seed, same teacher calls)")
        for name in ("method", "test accuracy", "Δ vs plain", "train size", "teacher calls"):
            table.add_column(name, justify="right")
        plain = runs["llm2llm"][0]["test_accuracy"]
        for name, arm, rows in (("plain fine-tuning", "plain", runs["llm2llm"][:1]),
                                ("LLM2LLM", "llm2llm", runs["llm2llm"]), ("random augmentation", "random", runs["random"])):
            acc, calls = final_accuracy(rows, arm), sum(r["calls"] for r in rows[:-1])
            table.add_row(name, f"{acc:.3f}", f"{acc - plain:+.3f}", str(rows[-1]["train_size"]), str(calls))
        console.print(table)

    _guard(go)


@app.command()
def effect(config: Path = typer.Argument(..., help="YAML run config"),
           seeds: str = typer.Option("0,1,2", "--seeds", help="sampling seeds, comma-separated"),
           set_: list[str] = typer.Option([], "--set", help="override a config field: key.sub=value"),
           out: Path = typer.Option(Path("runs/effect"), "--out", help="folder for the runs"),
           reuse: Optional[Path] = typer.Option(None, "--reuse", help="another effect folder whose seed samples "
                                                "share this study's iteration 0 (a variant of the teacher stages): "
                                                "its iteration 0 and teacher replies are taken, not made again"),
           verbose: bool = VERBOSE):
    """`compare` over several seed samples: mean and spread of test accuracy for plain fine-tuning, LLM2LLM
    and random augmentation, and LLM2LLM's gain; written to OUT/effect.md and OUT/effect.json."""
    display.set_verbose(verbose)
    from .compare import effect as measure, markdown

    def go():
        try:
            chosen = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise UserError(f"--seeds {seeds}: expected comma-separated integers") from None
        if not chosen:
            raise UserError("--seeds: give at least one sampling seed")
        if reuse is not None and not reuse.is_dir():
            raise UserError(f"--reuse {reuse}: no such folder")
        summary = measure(config, set_, chosen, out, console, _execute, reuse)
        console.print(markdown(summary, config.name))
        console.print(f"written: {out / 'effect.md'}")

    _guard(go)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="a run directory")):
    """Write RUN_DIR/report.md and a self-contained RUN_DIR/report.html with plots."""
    from .report import write_report

    def go():
        md, page = write_report(run_dir)
        console.print(f"wrote {md} and {page}")

    _guard(go)


@app.command()
def export(run_dir: Path = typer.Argument(..., help="a finished (or stopped) run directory"),
           out: Path = typer.Option(..., "--out", help="a .jsonl file, or a folder for the Hugging Face format"),
           fmt: str = typer.Option("jsonl", "--format", help="jsonl | hf"),
           push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="also push to this hub repo id")):
    """Export the final training set, seed and synthetic, with lineage columns (origin, parent_id, ...)."""
    import json

    from .report import final_dataset
    from .store import RunStore, atomic_write

    def go():
        store = RunStore(run_dir)
        if not store.metrics():
            raise UserError(f"{run_dir}: no metrics.jsonl: not a run directory, or nothing finished yet")
        rows = final_dataset(store)
        keys = list(dict.fromkeys(k for r in rows for k in r))  # one column set for every row
        rows = [{k: r.get(k) for k in keys} for r in rows]
        if fmt == "jsonl":
            atomic_write(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        elif fmt == "hf":  # a folder that datasets.load_dataset(folder) reads
            atomic_write(out / "data" / "train.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        else:
            raise UserError(f"--format {fmt}: expected jsonl or hf")
        if push_to_hub:
            import datasets

            datasets.Dataset.from_list(rows).push_to_hub(push_to_hub)
        console.print(f"wrote {len(rows)} examples to {out}")

    _guard(go)


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="run directory"),
         set_: list[str] = typer.Option([], "--set", help="override a config field: key.sub=value"),
         verbose: bool = VERBOSE):
    """The embedded default: SmolLM2-135M learns our own intent task from 48 examples with Qwen2.5-Coder-1.5B
    (on llama.cpp) as its teacher, offline on CPU."""
    from .config import load_config

    display.set_verbose(verbose)
    def go():
        folder = resources.files("llm2llm") / "demo"
        overrides = [f"data.train.path={folder / 'train.jsonl'}", f"data.test.path={folder / 'test.jsonl'}", *set_]
        _execute(load_config(Path(str(folder / "config.yaml")), overrides), out)

    _guard(go)


def main() -> None:
    app(prog_name="llm2llm")


if __name__ == "__main__":
    sys.exit(main())
