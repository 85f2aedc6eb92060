"""Kill a real run with SIGKILL at random points, resume it each time, and compare with a clean run."""
import json
import random
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
    tree["teacher"].update({"max_tokens": 16, "samples_per_example": 2})
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


def test_sigkill_at_random_points_then_resume_equals_clean_run(tmp_path):
    config = tiny_config(tmp_path)
    clean = start(config, tmp_path / "clean")
    assert clean.wait(timeout=900) == 0, clean.log.read_text()[-3000:]

    # each restart spends ~10 s loading the model, then gets a few seconds further before the kill
    rng = random.Random(0)
    run = tmp_path / "killed"
    kills = 0
    while kills < 10:
        proc = start(config, run)
        try:
            proc.wait(timeout=rng.uniform(4, 22))
            assert proc.returncode == 0, proc.log.read_text()[-3000:]
            break  # it finished before this kill point: the remaining points fall after the end
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
    final = start(config, run)
    assert final.wait(timeout=900) == 0, final.log.read_text()[-3000:]
    assert kills >= 3  # the kill points landed inside the run, not all after it

    assert results(run) == results(tmp_path / "clean")
    made = sqlite3.connect(run / "cache.sqlite").execute("SELECT key, made FROM calls").fetchall()
    assert made and all(n == 1 for _, n in made)  # no teacher call was made twice
    assert not list(run.rglob("*.tmp"))  # no half-written file was left behind


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
