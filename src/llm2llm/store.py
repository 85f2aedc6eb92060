"""The run directory: the only code that reads or writes it. Every write is atomic (temp + rename).

RUN/config.yaml, RUN/metrics.jsonl, RUN/cache.sqlite, and per iteration RUN/iter_NNN/ with
train.jsonl, pred_seed.jsonl, pred_test.jsonl, wrong.jsonl, teacher_calls.jsonl (and teacher_stats.json: calls,
retries, failures, req/s), accepted.jsonl, rejected.jsonl, model/ and STAGE (the stage started last). A stage is
done when its output file exists.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from . import UserError


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _differences(old, new, prefix="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new))
                for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


class RunStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- layout -----------------------------------------------------------------------------
    def iter_dir(self, iteration: int) -> Path:
        return self.root / f"iter_{iteration:03d}"

    def path(self, iteration: int, name: str) -> Path:
        return self.iter_dir(iteration) / name

    def has(self, iteration: int, name: str) -> bool:
        return self.path(iteration, name).exists()

    @property
    def cache_path(self) -> Path:
        return self.root / "cache.sqlite"

    # -- start ------------------------------------------------------------------------------
    def open(self, config: dict, free_fields: tuple[str, ...] = ()) -> bool:
        """Create the run dir, or reopen one made with an equal config; True when reopened.

        Fields in free_fields (dotted names or prefixes) do not change results and may differ.
        """
        snapshot = self.root / "config.yaml"
        if snapshot.exists():
            old = yaml.safe_load(snapshot.read_text(encoding="utf-8"))
            diff = [d for d in _differences(old, config)
                    if not any(d == f or d.startswith(f + ".") for f in free_fields)]
            if diff:
                raise UserError(f"{self.root}: holds a run with a different config ({', '.join(diff)}); "
                                "use another output dir")
            return True
        if self.root.exists() and any(self.root.iterdir()):
            raise UserError(f"{self.root}: exists and is not an llm2llm run dir (no config.yaml)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(snapshot, yaml.safe_dump(config, sort_keys=False))
        except OSError as err:
            raise UserError(f"{self.root}: cannot write the run dir: {err.strerror or err}") from None
        return False

    # -- records ----------------------------------------------------------------------------
    def write_jsonl(self, iteration: int, name: str, rows: list[dict]) -> None:
        atomic_write(self.path(iteration, name),
                     "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def write_json(self, iteration: int, name: str, record: dict) -> None:
        atomic_write(self.path(iteration, name), json.dumps(record, indent=1) + "\n")

    def read_jsonl(self, iteration: int, name: str) -> list[dict]:
        with self.path(iteration, name).open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def metrics(self) -> list[dict]:
        path = self.root / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def write_metrics(self, row: dict) -> None:
        rows = [r for r in self.metrics() if r["iteration"] != row["iteration"]] + [row]
        rows.sort(key=lambda r: r["iteration"])
        atomic_write(self.root / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def mark_stage(self, iteration: int, name: str) -> None:
        """iter_NNN/STAGE names the stage this iteration started last (train, evaluate, teacher, filter): it is
        in progress while its output is missing. For watching a run (the crash-safety test); never read back."""
        atomic_write(self.path(iteration, "STAGE"), name + "\n")

    # -- models -----------------------------------------------------------------------------
    def model_dir(self, iteration: int) -> Path:
        return self.path(iteration, "model")

    def model_done(self, iteration: int) -> bool:
        return (self.model_dir(iteration) / "DONE").exists()

    def mark_model_done(self, iteration: int, stats: dict) -> None:
        atomic_write(self.model_dir(iteration) / "train_stats.json", json.dumps(stats))
        atomic_write(self.model_dir(iteration) / "DONE", "")

    def train_stats(self, iteration: int) -> dict:
        return json.loads((self.model_dir(iteration) / "train_stats.json").read_text(encoding="utf-8"))

    def drop_model(self, iteration: int) -> None:
        shutil.rmtree(self.model_dir(iteration), ignore_errors=True)
