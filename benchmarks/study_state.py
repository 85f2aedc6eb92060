"""Carry an unfinished study across machines through git, without the benchmark's texts.

A seed sample of the GSM8K study takes longer than a session keeps its machine, and the run dirs stay out of git:
they hold the benchmark's texts and the models. `save` packs what a resume needs of each unfinished run dir into
OUT/<task>/seed_N/<arm>.state.gz, with every text of the task's data files (at least 24 characters long, as written
or JSON-escaped) replaced by a reference to its file, row and field, and every part of one 40 characters long or more
(a teacher restating a problem) by a reference with its character range; `load` unpacks it on a fresh clone from
the same data files (checked by sha256), byte for byte:

    python benchmarks/study_state.py save gsm8k_strong    # before the machine goes; then commit the .state.gz files
    python benchmarks/study_state.py load gsm8k_strong    # on a fresh clone, before benchmarks/effect.py
    python benchmarks/study_state.py save casehold_val_base --config casehold_strong   # a run of `llm2llm effect`

Packed: config.yaml, metrics.jsonl, every iteration's records (iter_NNN/*.json and *.jsonl), the teacher cache
(cache.sqlite's rows) and the answers of an evaluation stopped part-way with the sha256 of the weights that made
them. Left behind: the models. A stage whose output is packed needs no model (training starts from the base model
every iteration); the unfinished iteration trains its model again (seeded), uses the carried answers only where the
new weights are the same bytes (llm2llm.store), and asks the teacher nothing it had asked. `save` unpacks
what it packed in memory and writes nothing unless every byte comes back and no run of 20 words of a data text is
left in it (a teacher's own solution of a seed problem shared 12 with the data's: phrasing, not a copy). A seed
sample with a summary.json is finished: its state files are removed (its figures are committed).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import sqlite3
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
from llm2llm import fail  # noqa: E402
from llm2llm.config import Source  # noqa: E402
from llm2llm.data import read_source  # noqa: E402
from llm2llm.store import atomic_write  # noqa: E402
from llm2llm.teacher.cache import Cache  # noqa: E402

FORMAT = "llm2llm-study-state/1"
ANCHOR = 24  # shorter whole texts are left as they are (a reference would be no shorter)
CHUNK, SPAN = 16, 40  # a part of a data text is found by a CHUNK-character piece of it, and replaced from SPAN up
SHINGLE = 20  # words: a run this long of a data text left in a pack stops `save`
MARK = "@@llm2llm-data:"
PLACEHOLDER = re.compile(re.escape(MARK) + r"(\d+):(\d+):([\w.]+):(\w+)(?::(\d+):(\d+))?@@")
ARMS = ("llm2llm", "random")


# -- the data's texts -----------------------------------------------------------------------------------------
def data_files(task: str) -> list[Path]:
    """The data files a study task's config names (train, then test)."""
    cfg = yaml.safe_load((ROOT / "benchmarks" / "effect" / f"{task}.yaml").read_text(encoding="utf-8"))
    paths = []
    for split in ("train", "test"):
        source = (cfg.get("data") or {}).get(split)
        path = source.get("path") if isinstance(source, dict) else source
        if path:
            paths.append((ROOT / path).resolve())
    return paths


def strings(value, field: str = ""):
    """(field path, text) for every string in a JSON value: `endings.2` for a list's third."""
    if isinstance(value, str):
        yield field, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{field}.{key}" if field else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from strings(item, f"{field}.{i}" if field else str(i))


def variants(text: str) -> dict[str, str]:
    """The forms a text takes in the run dir's files: as written (r), JSON-escaped once (j: ensure_ascii off, as the
    JSONL records are written; a: on, as the JSON records are) and twice (a teacher prompt that shows examples as
    JSON, inside a JSONL record)."""
    j, a = json.dumps(text, ensure_ascii=False)[1:-1], json.dumps(text)[1:-1]
    return {"r": text, "j": j, "a": a, "jj": json.dumps(j, ensure_ascii=False)[1:-1], "ja": json.dumps(j)[1:-1],
            "aa": json.dumps(a)[1:-1]}


class DataTexts:
    """Every string field of the data files, by (file number, row number, field path)."""

    def __init__(self, files: list[Path]):
        self.files, self.rows = files, []
        for path in files:  # read as a run reads them (a bad file is the same one-line error)
            self.rows.append([row for _, row in read_source(Source(path=str(path)))])

    def digests(self) -> list[str]:
        return [hashlib.sha256(path.read_bytes()).hexdigest() for path in self.files]

    def texts(self):
        for f, rows in enumerate(self.rows):
            for r, row in enumerate(rows):
                for field, text in strings(row):
                    yield (f, r, field), text

    def text(self, f: int, r: int, field: str) -> str:
        value = self.rows[f][r]
        for key in field.split("."):
            value = value[int(key)] if isinstance(value, list) else value[key]
        return value


class Redactor:
    """Replaces the data's texts in a file's text with references to them, and back: a whole text (ANCHOR characters
    or more) by its place in the data, a part of one (SPAN characters or more: a teacher restating a problem) by its
    place and character range."""

    def __init__(self, data: DataTexts):
        self.data = data
        self.anchors: dict[str, list[tuple[str, str]]] = {}
        self.chunks: dict[str, list[tuple[int, int]]] = {}  # CHUNK characters at every CHUNK-th offset of each form
        self.forms: list[tuple[str, str]] = []  # (form, its reference without the range)
        self.shingles: set[int] = set()
        for (f, r, field), text in data.texts():
            if len(text) >= ANCHOR:
                added = set()  # the forms of this text (most texts have the same one escaped or not)
                for name, form in variants(text).items():
                    ref = f"{MARK}{f}:{r}:{field}:{name}"
                    self.anchors.setdefault(form[:ANCHOR], []).append((form, ref + "@@"))
                    if len(form) >= SPAN and form not in added:
                        added.add(form)
                        self.forms.append((form, ref))
                        for at in range(0, len(form) - CHUNK + 1, CHUNK):
                            found = self.chunks.setdefault(form[at:at + CHUNK], [])
                            if len(found) < 4:
                                found.append((len(self.forms) - 1, at))
            words = words_of(text)
            self.shingles.update(hash(tuple(words[i:i + SHINGLE])) for i in range(len(words) - SHINGLE + 1))
        for found in self.anchors.values():
            found.sort(key=lambda item: -len(item[0]))  # the longest form first: an escaped text holds more

    def redact(self, text: str) -> str:
        out, start, i, end = [], 0, 0, len(text)
        while i < end:
            found = self.anchors.get(text[i:i + ANCHOR])
            form = next((item for item in found if text.startswith(item[0], i)), None) if found else None
            if form:
                out += [text[start:i], form[1]]
                i = start = i + len(form[0])
                continue
            span = self.span(text, i, start) if text[i:i + CHUNK] in self.chunks else None
            if span:
                left, right, ref = span
                out += [text[start:left], ref]
                i = start = right
                continue
            i += 1
        return "".join(out) + text[start:]

    def span(self, text: str, i: int, start: int) -> tuple[int, int, str] | None:
        """The longest part of a data text around text[i:i + CHUNK] (not before `start`): (its start and end in text,
        its reference), where it is SPAN characters or more."""
        best = None
        for index, at in self.chunks[text[i:i + CHUNK]]:
            form, ref = self.forms[index]
            back = 0
            while back < min(at, i - start) and text[i - back - 1] == form[at - back - 1]:
                back += 1
            ahead = CHUNK
            while at + ahead < len(form) and i + ahead < len(text) and text[i + ahead] == form[at + ahead]:
                ahead += 1
            if back + ahead >= SPAN and (best is None or back + ahead > best[1] - best[0]):
                best = (i - back, i + ahead, f"{ref}:{at - back}:{at + ahead}@@")
        return best

    def restore(self, text: str) -> str:
        def text_of(m):
            form = variants(self.data.text(int(m[1]), int(m[2]), m[3]))[m[4]]
            return form[int(m[5]):int(m[6])] if m[5] else form
        return PLACEHOLDER.sub(text_of, text)

    def left(self, text: str) -> int:
        """How many runs of SHINGLE words of a data text are in text (escapes read as spaces)."""
        words = words_of(text)
        return sum(hash(tuple(words[i:i + SHINGLE])) in self.shingles for i in range(len(words) - SHINGLE + 1))


def words_of(text: str) -> list[str]:
    return re.findall(r"\w+", re.sub(r"\\+[nrt]", " ", text).lower())


# -- packing --------------------------------------------------------------------------------------------------
def run_files(run: Path) -> list[Path]:
    """The files of a run dir a resume needs, but the cache and the models."""
    found = [run / "config.yaml", run / "metrics.jsonl"]
    for folder in sorted(run.glob("iter_*")):
        found += sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".jsonl"))
        for made_by in sorted(folder.glob("model/partial_*.jsonl.weights")):  # answers with the digest of their model
            found += [made_by.with_suffix(""), made_by]
    return [p for p in found if p.exists()]


def cache_rows(run: Path) -> list[tuple[str, int, str]]:
    path = run / "cache.sqlite"
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # its write-ahead log too; a running study is not held up
    try:
        return db.execute("SELECT key, made, reply FROM calls ORDER BY key").fetchall()
    finally:
        db.close()


def pack(run: Path, redactor: Redactor) -> list[dict]:
    """The records of a run dir's state file; a one-line error where they would not come back whole or would
    keep a data text."""
    records = [{"format": FORMAT, "data": [{"path": str(p.relative_to(ROOT.parent)) if p.is_relative_to(ROOT.parent)
                                            else str(p), "sha256": d}
                                           for p, d in zip(redactor.data.files, redactor.data.digests())]}]
    originals = []
    for path in run_files(run):
        text = path.read_text(encoding="utf-8")
        records.append({"file": str(path.relative_to(run)), "text": redactor.redact(text)})
        originals.append((str(path.relative_to(run)), text))
    for key, made, reply in cache_rows(run):
        records.append({"cache": key, "made": made, "reply": redactor.redact(reply)})
        originals.append((f"cache.sqlite[{key}]", reply))
    for record, (where, text) in zip(records[1:], originals):
        packed = record.get("text", record.get("reply"))
        if MARK in text:
            fail(f"error: {run / where}: holds '{MARK}', which the state file uses for its references")
        if redactor.restore(packed) != text:
            fail(f"error: {run / where}: would not unpack to the same bytes; nothing written")
        if redactor.left(packed):
            fail(f"error: {run / where}: {redactor.left(packed)} runs of {SHINGLE} words of a data text are left after "
                 "the data's texts are replaced; nothing written")
    return records


def unpack(records: list[dict], run: Path, redactor: Redactor) -> int:
    """Write a run dir from its state records; how many teacher replies went into its cache."""
    for record in records[1:]:
        if "file" in record:
            atomic_write(run / record["file"], redactor.restore(record["text"]))
    rows = [(r["cache"], redactor.restore(r["reply"]), r["made"]) for r in records[1:] if "cache" in r]
    Cache(run / "cache.sqlite").close()  # its table
    db = sqlite3.connect(run / "cache.sqlite")
    with db:
        db.executemany("INSERT INTO calls (key, reply, made) VALUES (?, ?, ?)", rows)
    db.close()
    return len(rows)


def read_state(path: Path) -> list[dict]:
    try:
        records = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines()]
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        fail(f"error: {path}: damaged, not a study state file ({err})")
    if not records or records[0].get("format") != FORMAT:
        fail(f"error: {path}: not a study state file ({FORMAT})")
    return records


def seed_dirs(out: Path) -> list[Path]:
    return sorted((p for p in out.glob("seed_*") if p.is_dir()), key=lambda p: (len(p.name), p.name))


def save(out: Path, redactor: Redactor) -> None:
    for seed in seed_dirs(out):
        states = [seed / f"{arm}.state.gz" for arm in ARMS]
        if (seed / "summary.json").exists():
            for path in states:
                if path.exists():
                    path.unlink()
                    print(f"removed: {path} (the seed sample is finished)")
            continue
        for arm, path in zip(ARMS, states):
            run = seed / arm
            if not (run / "config.yaml").exists():
                continue
            records = pack(run, redactor)
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            part = path.with_name(path.name + ".part")  # the last state file stays whole until the new one is
            part.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
            os.replace(part, path)
            files, calls = sum("file" in r for r in records), sum("cache" in r for r in records)
            print(f"saved: {path} ({files} files, {calls} teacher replies, {path.stat().st_size / 1024:.0f} KiB)")


def load(out: Path, redactor: Redactor) -> None:
    digests = redactor.data.digests()
    for seed in seed_dirs(out):
        for arm in ARMS:
            path, run = seed / f"{arm}.state.gz", seed / arm
            if not path.exists():
                continue
            if run.exists() and any(run.iterdir()):
                print(f"left as it is: {run} (exists; {path} not unpacked)")
                continue
            records = read_state(path)
            recorded = [d["sha256"] for d in records[0]["data"]]
            if recorded != digests:
                fail(f"error: {path}: packed against other data files than {', '.join(map(str, redactor.data.files))}"
                     " (sha256 differs); nothing unpacked")
            calls = unpack(records, run, redactor)
            print(f"loaded: {run} ({sum('file' in r for r in records)} files, {calls} teacher replies)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["save", "load"])
    parser.add_argument("task", help="a study task: a config stem in benchmarks/effect/ (e.g. gsm8k_strong), or with "
                        "--config any folder of OUT that `llm2llm effect` wrote (e.g. casehold_val_base)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "effect" / "study")
    parser.add_argument("--config", default=None,
                        help="the config stem whose data files hold the texts (default: TASK)")
    args = parser.parse_args()
    config = args.config or args.task
    if not (ROOT / "benchmarks" / "effect" / f"{config}.yaml").exists():
        fail(f"error: benchmarks/effect/{config}.yaml: no such study config")
    if not seed_dirs(args.out / args.task):
        print(f"nothing to {args.action}: no seed_N folder in {args.out / args.task}")
        return
    redactor = Redactor(DataTexts(data_files(config)))
    (save if args.action == "save" else load)(args.out / args.task, redactor)


if __name__ == "__main__":
    main()
