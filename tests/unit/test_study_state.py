"""benchmarks/study_state.py: a run dir packed without the data's texts comes back byte for byte."""
import gzip
import json
import sqlite3

import pytest

from benchmarks.study_state import DataTexts, Redactor, load, save

ROWS = [
    {"question": "A baker fills 12 trays with 9 rolls each and sells 70 of them. How many rolls are left?",
     "answer": "12 * 9 = 108 rolls.\n108 - 70 = 38 rolls are left.\n#### 38"},
    {"question": "Zoë walks 3 km to the café and back twice a day. How far does she walk in 5 days?",
     "answer": "One day: 2 * 2 * 3 = 12 km.\nFive days: 5 * 12 = 60 km.\n#### 60"},
    {"context": "The court held that the contract was void because <HOLDING> and the parties never agreed.",
     "endings": ["holding that a promise without consideration binds no one", "short"], "label": 0},
]


def write_jsonl(path, rows, ascii=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=ascii) + "\n" for r in rows), encoding="utf-8")


def make_run(run, rows):
    (run / "iter_000" / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("task:\n  type: math\n", encoding="utf-8")
    write_jsonl(run / "metrics.jsonl", [{"iteration": 0, "test_accuracy": 0.5}])
    write_jsonl(run / "iter_000" / "train.jsonl", [{**rows[0], "id": "train-0"}, {**rows[1], "id": "train-1"}])
    shown = json.dumps({"examples": [rows[0], rows[1]]}, ensure_ascii=False)
    write_jsonl(run / "iter_000" / "teacher_calls.jsonl",
                [{"parent_id": "train-1", "parent": rows[1],
                  "messages": [{"role": "user", "content": f"Write:\n{shown}"}],
                  "reply": {"text": '{"examples": [{"question": "A new one?", "answer": "#### 1"}]}'}}])
    (run / "iter_000" / "judges.json").write_text(json.dumps({"probe": rows[2]}, indent=1) + "\n", encoding="utf-8")
    (run / "iter_000" / "model" / "adapter.bin").write_bytes(b"weights")
    write_jsonl(run / "iter_000" / "model" / "partial_pred_seed.jsonl", [{"id": "train-0", "prediction": "12 * 9"}])
    (run / "iter_000" / "model" / "partial_pred_seed.jsonl.weights").write_text("ab12\n")
    write_jsonl(run / "iter_000" / "model" / "partial_pred_test.jsonl", [{"id": "t", "prediction": "no digest"}])
    db = sqlite3.connect(run / "cache.sqlite")
    db.execute("CREATE TABLE calls (key TEXT PRIMARY KEY, reply TEXT NOT NULL, made INTEGER NOT NULL DEFAULT 1)")
    db.execute("INSERT INTO calls VALUES (?, ?, 1)", ("k1", json.dumps({"text": f"Solving: {rows[1]['question']}"})))
    db.commit()
    db.close()


def test_a_run_dir_comes_back_byte_for_byte_and_its_pack_holds_no_data_text(tmp_path):
    data = tmp_path / "data.jsonl"
    write_jsonl(data, ROWS)
    redactor = Redactor(DataTexts([data]))
    out = tmp_path / "study"
    make_run(out / "seed_0" / "llm2llm", ROWS)
    save(out, redactor)
    state = out / "seed_0" / "llm2llm.state.gz"
    packed = gzip.decompress(state.read_bytes()).decode("utf-8")
    for text in ["A baker fills 12 trays", "Zoë walks 3 km", "Zo\\u00eb walks", "The court held",
                 "holding that a promise without"]:
        assert text not in packed
    assert "adapter.bin" not in packed  # the models stay behind

    clone = tmp_path / "clone"
    (clone / "seed_0").mkdir(parents=True)
    (clone / "seed_0" / "llm2llm.state.gz").write_bytes(state.read_bytes())
    load(clone, redactor)
    old, new = out / "seed_0" / "llm2llm", clone / "seed_0" / "llm2llm"
    for path in ["config.yaml", "metrics.jsonl", "iter_000/train.jsonl", "iter_000/teacher_calls.jsonl",
                 "iter_000/judges.json"]:
        assert (new / path).read_bytes() == (old / path).read_bytes(), path
    assert sorted(p.name for p in (new / "iter_000" / "model").iterdir()) == [  # answers with their weights' digest
        "partial_pred_seed.jsonl", "partial_pred_seed.jsonl.weights"]
    for path in ["iter_000/model/partial_pred_seed.jsonl", "iter_000/model/partial_pred_seed.jsonl.weights"]:
        assert (new / path).read_bytes() == (old / path).read_bytes(), path
    rows = sqlite3.connect(new / "cache.sqlite").execute("SELECT key, reply, made FROM calls").fetchall()
    assert rows == sqlite3.connect(old / "cache.sqlite").execute("SELECT key, reply, made FROM calls").fetchall()

    load(clone, redactor)  # a run dir already there is left as it is
    assert (new / "iter_000" / "train.jsonl").read_bytes() == (old / "iter_000" / "train.jsonl").read_bytes()


def test_a_restated_part_of_a_data_text_is_replaced_too(tmp_path):
    data = tmp_path / "data.jsonl"
    write_jsonl(data, ROWS)
    redactor = Redactor(DataTexts([data]))
    part = ROWS[1]["question"][4:60]  # a teacher restating most of a problem
    text = json.dumps({"text": f"Restated: {part}, so: 60"}) + "\n"
    packed = redactor.redact(text)
    assert "walks 3 km" not in packed and packed.startswith('{"text": "Restated:@@llm2llm-data:0:1:question:')
    assert redactor.restore(packed) == text


def test_a_finished_seed_sample_loses_its_state_and_a_data_text_left_stops_save(tmp_path):
    shouted = "we met an old man by the sea as he sat on a rock at the end of a long day in may"
    data = tmp_path / "data.jsonl"
    write_jsonl(data, [*ROWS, {"question": shouted, "answer": "#### 0"}])
    redactor = Redactor(DataTexts([data]))
    out = tmp_path / "study"
    (out / "seed_0").mkdir(parents=True)
    (out / "seed_0" / "summary.json").write_text("{}")
    (out / "seed_0" / "llm2llm.state.gz").write_bytes(b"old")
    make_run(out / "seed_1" / "llm2llm", ROWS)
    write_jsonl(out / "seed_1" / "llm2llm" / "iter_000" / "rejected.jsonl", [{"question": shouted.upper()}])
    with pytest.raises(SystemExit) as stop:  # the same words, not the same characters: not replaced, and caught
        save(out, redactor)
    assert stop.value.code == 2
    assert not (out / "seed_0" / "llm2llm.state.gz").exists()
    assert not (out / "seed_1" / "llm2llm.state.gz").exists()


def test_load_refuses_a_state_packed_against_other_data(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    write_jsonl(data, ROWS)
    out = tmp_path / "study"
    make_run(out / "seed_0" / "llm2llm", ROWS)
    save(out, Redactor(DataTexts([data])))
    write_jsonl(data, ROWS[:2])
    clone = tmp_path / "clone" / "seed_0"
    clone.mkdir(parents=True)
    (clone / "llm2llm.state.gz").write_bytes((out / "seed_0" / "llm2llm.state.gz").read_bytes())
    with pytest.raises(SystemExit) as stop:
        load(clone.parent, Redactor(DataTexts([data])))
    assert stop.value.code == 2
    assert "sha256 differs" in capsys.readouterr().err
    assert not (clone / "llm2llm").exists()


def test_the_effect_benchmark_unpacks_a_carried_state_before_it_runs_the_task(tmp_path, monkeypatch):
    import subprocess
    import types

    import benchmarks.effect as effect
    from benchmarks.study_state import data_files

    data = data_files("intent_strong")
    rows = [json.loads(line) for line in data[0].read_text(encoding="utf-8").splitlines()[:4]]
    out = tmp_path / "study" / "intent_strong"
    run = out / "seed_0" / "llm2llm"
    write_jsonl(run / "iter_000" / "train.jsonl", rows)
    (run / "config.yaml").write_text("task:\n  type: classification\n", encoding="utf-8")
    save(out, Redactor(DataTexts(data)))
    packed = gzip.decompress((out / "seed_0" / "llm2llm.state.gz").read_bytes()).decode("utf-8")
    assert not any(row["text"] in packed for row in rows if len(row["text"]) >= 24)
    kept = (run / "iter_000" / "train.jsonl").read_bytes()
    for path in sorted(run.rglob("*"), reverse=True):  # a fresh clone: the state file, no run dir
        path.unlink() if path.is_file() else path.rmdir()
    run.rmdir()

    launched = []

    class Child:
        def __init__(self, cmd, **kwargs):
            launched.append((cmd, (run / "iter_000" / "train.jsonl").read_bytes()))

        def wait(self):
            return 0

    monkeypatch.setattr(effect, "subprocess", types.SimpleNamespace(Popen=Child, run=subprocess.run))
    assert effect.run_task("intent_strong", "0", [], out, "abc1234") == 0
    assert launched and launched[0][1] == kept  # unpacked before `llm2llm effect` started


def test_load_names_a_damaged_state_file_and_unpacks_nothing(tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    write_jsonl(data, ROWS)
    seed = tmp_path / "study" / "seed_0"
    seed.mkdir(parents=True)
    (seed / "random.state.gz").write_bytes(gzip.compress(b'{"format": "llm2llm-study-state/1", "da'))
    with pytest.raises(SystemExit) as stop:
        load(tmp_path / "study", Redactor(DataTexts([data])))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {seed / 'random.state.gz'}: damaged") and len(err.splitlines()) == 1
    assert not (seed / "random").exists()
