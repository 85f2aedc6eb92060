"""Read a split (JSONL, CSV or a Hugging Face dataset), validate it against the task, sample the seed."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from . import UserError
from .config import DataConfig, Source
from .tasks import Task


def _read_jsonl(path: Path) -> list[tuple[str, dict]]:
    rows = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise UserError(f"{where}: not valid UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: invalid JSON: {err.msg} (column {err.colno})") from None
            if not isinstance(row, dict):
                raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
            rows.append((where, row))
    return rows


def _read_csv(path: Path) -> list[tuple[str, dict]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:  # a byte-order mark (Excel writes one) is skipped
            return [(f"{path}:{number}", dict(row)) for number, row in enumerate(csv.DictReader(f), 2)]
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid UTF-8") from None
    except csv.Error as err:
        raise UserError(f"{path}: invalid CSV: {err}") from None


def _read_hf(source: Source) -> list[tuple[str, dict]]:
    import datasets  # imported here: only users of hub datasets pay for it

    where = f"{source.hf}[{source.split}]"
    try:
        rows = datasets.load_dataset(source.hf, source.name, split=source.split)
    except Exception as err:  # the datasets library raises many types; the user needs the message
        raise UserError(f"{where}: cannot load the dataset: {str(err).splitlines()[0]}") from None
    names = {col: feat.names for col, feat in rows.features.items() if isinstance(feat, datasets.ClassLabel)}
    out = []
    for i, row in enumerate(rows):  # class ids become their names: labels are text to the student
        out.append((f"{where} row {i}", {k: names[k][v] if k in names and isinstance(v, int) else v
                                         for k, v in row.items()}))
    return out


def read_source(source: Source) -> list[tuple[str, dict]]:
    """The rows of one split, each with where it came from ('file:line')."""
    if source.hf:
        rows = _read_hf(source)
        label = source.hf
    else:
        path = Path(source.path)
        if path.is_dir():
            raise UserError(f"{path}: is a directory; give a JSONL, JSON lines or CSV file")
        if not path.is_file():
            raise UserError(f"{path}: no such file")
        rows = _read_csv(path) if path.suffix.lower() == ".csv" else _read_jsonl(path)
        label = str(path)
    if not rows:
        raise UserError(f"{label}: no rows")
    return rows[: source.limit] if source.limit else rows


def to_records(rows: list[tuple[str, dict]], task: Task, split: str) -> list[dict]:
    """Validate rows against the task and give each a unique id and seed lineage."""
    records, seen = [], {}
    for index, (where, row) in enumerate(rows):
        problem = task.check(row)
        if problem:
            raise UserError(f"{where}: {problem}")
        rid = str(row["id"]) if row.get("id") is not None else f"{split}-{index}"
        if rid in seen:
            raise UserError(f"{where}: duplicate id '{rid}' (first at {seen[rid]})")
        seen[rid] = where
        records.append({**row, "id": rid, "origin": "seed", "parent_id": None, "iteration": 0,
                        "teacher_model": None})
    shapes = set()  # with plain {name} fields, only the row's field names decide whether a template fills
    for (where, _), record in zip(rows, records):
        if frozenset(record) in shapes:
            continue
        shapes.add(frozenset(record))
        try:
            task.check_templates(record)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None
    return records


def sample(records: list[dict], size: int | None, rng: random.Random, what: str) -> list[dict]:
    if size is None or size == len(records):
        return records
    if size > len(records):
        raise UserError(f"data.{what}: {size} is more than the {len(records)} rows available")
    return rng.sample(records, size)


def load_splits(cfg: DataConfig, task_from_rows) -> tuple[object, list[dict], list[dict]]:
    """(task, seed, test): the task is built from the training rows (its label set, for one)."""
    train_rows = read_source(cfg.train)
    task = task_from_rows([row for _, row in train_rows])
    train = to_records(train_rows, task, "train")
    rng = random.Random(cfg.sampling_seed)
    test_rng = rng if cfg.test_seed is None else random.Random(cfg.test_seed)
    if cfg.test is None:  # one file: hold out a test set first, sample the seed from the rest
        test = sample(train, cfg.test_size, test_rng, "test_size")
        held = {ex["id"] for ex in test}
        train = [ex for ex in train if ex["id"] not in held]
    else:
        test = sample(to_records(read_source(cfg.test), task, "test"), cfg.test_size, test_rng, "test_size")
    size = cfg.seed_size if cfg.seed_fraction is None else max(1, round(cfg.seed_fraction * len(train)))
    return task, sample(train, size, rng, "seed_size"), test
