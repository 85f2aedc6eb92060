"""The run directory: the only code that reads or writes it. Every write is atomic (temp + rename).

RUN/config.yaml, RUN/metrics.jsonl, RUN/cache.sqlite, and per iteration RUN/iter_NNN/ with
train.jsonl, pred_seed.jsonl, pred_test.jsonl, wrong.jsonl, teacher_calls.jsonl (and teacher_stats.json: calls,
retries, failures, req/s), accepted.jsonl, rejected.jsonl, model/, clock.json (seconds per finished stage) and
STAGE (the stage started last). A stage is done when its output file exists. An evaluation by generation keeps
its answers batch by batch in model/partial_pred_*.jsonl until its output is written, so a resume goes on from there
(with the sha256 of the weights that made them beside, in partial_pred_*.jsonl.weights: answers carried to a model
trained again are used only where it has the same bytes).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import yaml

from . import UserError
from .records import metrics_row


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


def _remedy(path: Path) -> str:
    """What to do about a damaged file of a run dir without losing the run."""
    if path.name == "metrics.jsonl":
        return "remove that line: resume writes its iteration's row again from the stage files"
    if path.name == "train_stats.json":
        return f"remove {path.parent}: resume trains that model again (training is seeded: the same model)"
    if path.name == "judge_stats.json":
        return ("remove it with accepted.jsonl and rejected.jsonl beside it: resume filters again "
                "(the judge's replies come from cache.sqlite, unpaid)")
    if path.name == "teacher_stats.json":
        return "remove it: it only summarises the teacher stage for the report"
    return ("it is a stage output: remove it and resume computes it again (teacher replies come from "
            "cache.sqlite, unpaid; predictions may need that iteration's model trained again)")


def _damaged(path: Path, where: str, why: str) -> UserError:
    return UserError(f"{path}{where}: damaged ({why}); {_remedy(path)}")


def read_records(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file of the run dir; a damaged line is a one-line error naming it."""
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise _damaged(path, "", f"not valid UTF-8 at byte {err.start}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise _damaged(path, f":{number}", f"invalid JSON: {err.msg}, column {err.colno}") from None
        if not isinstance(row, dict):
            raise _damaged(path, f":{number}", "not a JSON object")
        rows.append(row)
    return rows


def read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(path, "", f"invalid JSON: {getattr(err, 'msg', err)}") from None
    if not isinstance(record, dict):
        raise _damaged(path, "", "not a JSON object")
    return record


def _differences(old, new, prefix="") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new))
                for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [prefix.rstrip(".")]


def config_differences(old: dict, new: dict, free_fields: tuple[str, ...] = ()) -> list[str]:
    """The dotted names of the fields where two configs differ, but for free_fields (names or prefixes)."""
    return [d for d in _differences(old, new) if not any(d == f or d.startswith(f + ".") for f in free_fields)]


class RunStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._digests: dict[int, str] = {}  # weights_digest's, by iteration

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
    def open(self, config: dict, changed=config_differences) -> bool:
        """Create the run dir, or reopen one made with an equal config; True when reopened.

        `changed(old, new)`: the fields in which the run dir's config and this one differ in what they produce
        (config.changed_fields: some fields may differ).
        """
        snapshot = self.root / "config.yaml"
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root}: exists and is not a directory; give --out a directory")
        old = self.recorded_config()
        if old is not None:
            diff = changed(old, config)
            if diff:
                raise UserError(f"{self.root}: holds a run with a different config ({', '.join(diff)}); "
                                "use another output dir")
            self.check()
            return True
        if self.root.exists() and any(self.root.iterdir()):
            raise UserError(f"{self.root}: exists and is not an llm2llm run dir (no config.yaml)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(snapshot, yaml.safe_dump(config, sort_keys=False))
        except OSError as err:
            raise UserError(f"{self.root}: cannot write the run dir: {err.strerror or err}") from None
        return False

    def recorded_config(self) -> dict | None:
        """The config the run dir was made with (RUN/config.yaml), or None where there is none."""
        snapshot = self.root / "config.yaml"
        if not snapshot.exists():
            return None
        try:
            old = yaml.safe_load(snapshot.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise UserError(f"{snapshot}: damaged, not a readable config ({str(err).splitlines()[0]}); "
                            "use another output dir") from None
        if not isinstance(old, dict):
            raise UserError(f"{snapshot}: damaged, not a config mapping; use another output dir")
        return old

    def check(self) -> None:
        """Read every record of a run dir before anything is loaded or run: damage (a truncated line or file)
        is a one-line error naming the file and line and saying how to go on, not a crash later."""
        self.metrics()
        for folder in sorted(self.root.glob("iter_*")):
            for path in sorted(folder.glob("*.jsonl")):
                read_records(path)
            for path in sorted([*folder.glob("*.json"), *folder.glob("model/train_stats.json")]):
                read_record(path)
        if self.cache_path.exists():
            try:
                db = sqlite3.connect(self.cache_path)
                ok = db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
                db.close()
            except sqlite3.DatabaseError:
                ok = False
            if not ok:
                raise UserError(f"{self.cache_path}: damaged (not a sound SQLite database); move it away and resume: "
                                "finished stages are read from their files, and only unfinished teacher calls are "
                                "asked again")

    # -- records ----------------------------------------------------------------------------
    def write_jsonl(self, iteration: int, name: str, rows: list[dict]) -> None:
        atomic_write(self.path(iteration, name),
                     "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))

    def write_json(self, iteration: int, name: str, record: dict) -> None:
        atomic_write(self.path(iteration, name), json.dumps(record, indent=1) + "\n")

    def read_jsonl(self, iteration: int, name: str) -> list[dict]:
        return read_records(self.path(iteration, name))

    def read_json(self, iteration: int, name: str) -> dict:
        return read_record(self.path(iteration, name))

    def metrics(self) -> list[dict]:
        """metrics.jsonl's rows in today's names (records.metrics_row: older rows' `generated` is `calls`)."""
        return [metrics_row(row) for row in self._metrics_as_written()]

    def _metrics_as_written(self) -> list[dict]:
        path = self.root / "metrics.jsonl"
        if not path.exists():
            return []
        rows = read_records(path)
        for number, row in enumerate(rows, 1):
            if not isinstance(row.get("iteration"), int):
                raise _damaged(path, f" row {number}", "no iteration number")
        return rows

    def write_metrics(self, row: dict) -> None:
        """Add or replace the row of its iteration; the other rows stay as they were written."""
        rows = [r for r in self._metrics_as_written() if r["iteration"] != row["iteration"]] + [row]
        rows.sort(key=lambda r: r["iteration"])
        atomic_write(self.root / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))

    def stage(self, iteration: int, name: str, compute) -> list[dict]:
        """The stage's records: read back when already on disk, else computed and written atomically."""
        if self.has(iteration, name):
            return self.read_jsonl(iteration, name)
        rows = compute()
        self.write_jsonl(iteration, name, rows)
        self._partial_path(iteration, name).unlink(missing_ok=True)
        self._partial_path(iteration, name + ".weights").unlink(missing_ok=True)
        return rows

    def _partial_path(self, iteration: int, name: str) -> Path:
        # beside the model that made the answers: a model trained again (its dir removed) starts them afresh
        return self.model_dir(iteration) / f"partial_{name}"

    def partial(self, iteration: int, name: str) -> dict[str, str]:
        """The answers (example id: text) of this iteration's evaluation stage `name` stopped part-way, as kept by
        `keep_partial`; removed when the stage's output is written. Answers kept beside other weights than the
        model's now (a model trained again on another machine, where the answers were carried) are not used."""
        path, made_by = self._partial_path(iteration, name), self._partial_path(iteration, name + ".weights")
        if not path.exists() or (made_by.exists() and made_by.read_text().strip() != self.weights_digest(iteration)):
            return {}
        return {str(r["id"]): r["prediction"] for r in read_records(path)}

    def keep_partial(self, iteration: int, name: str, answers: dict[str, str]) -> None:
        atomic_write(self._partial_path(iteration, name + ".weights"), self.weights_digest(iteration) + "\n")
        atomic_write(self._partial_path(iteration, name),
                     "".join(json.dumps({"id": i, "prediction": t}, ensure_ascii=False) + "\n" for i, t in answers.items()))

    def weights_digest(self, iteration: int) -> str:
        """sha256 over the saved weights of this iteration's model (its *.safetensors and *.bin files; "" for none),
        computed once a process: which model an evaluation's answers came from."""
        if iteration not in self._digests:
            folder, digest = self.model_dir(iteration), hashlib.sha256()
            found = sorted(folder.iterdir()) if folder.is_dir() else []
            weights = [p for p in found if p.suffix in (".safetensors", ".bin")]
            for path in weights:
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
            self._digests[iteration] = digest.hexdigest() if weights else ""
        return self._digests[iteration]

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
        self._digests.pop(iteration, None)
        atomic_write(self.model_dir(iteration) / "train_stats.json", json.dumps(stats))
        atomic_write(self.model_dir(iteration) / "DONE", "")

    def train_stats(self, iteration: int) -> dict:
        return read_record(self.model_dir(iteration) / "train_stats.json")

    def drop_model(self, iteration: int) -> None:
        self._digests.pop(iteration, None)
        shutil.rmtree(self.model_dir(iteration), ignore_errors=True)
