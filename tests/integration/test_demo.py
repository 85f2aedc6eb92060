"""The main job as a new user runs it: `llm2llm demo`, the real student and the real 1.5B teacher on llama.cpp,
iterations 0 to 3 (about 3 minutes on 2 cores)."""
import json
import os
import subprocess
import sys
import uuid

import pytest

from test_llamacpp_teacher import servers

pytestmark = pytest.mark.slow


def test_the_demo_runs_its_four_iterations_with_the_strong_teacher_and_leaves_no_server(tmp_path):
    out, mark = tmp_path / "demo", f"LLM2LLM_DEMO_TEST={uuid.uuid4()}"  # the mark: in the environment of its servers
    done = subprocess.run([sys.executable, "-m", "llm2llm.cli", "demo", "--out", str(out)], capture_output=True,
                          text=True, timeout=1800, env={**os.environ, mark.split("=")[0]: mark.split("=")[1]})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    assert rows[0]["train_size"] == 48 and rows[-1]["train_size"] == 48 + sum(r["accepted"] for r in rows[:-1])
    assert all(0 < r["test_accuracy"] <= 1 for r in rows) and sum(r["calls"] for r in rows) > 0
    calls = [json.loads(line) for line in (out / "iter_000" / "teacher_calls.jsonl").read_text().splitlines()]
    assert calls and all(c["reply"]["status"] == "ok" for c in calls)
    assert all("qwen2.5-coder-1.5b" in json.loads(line)["teacher_model"]
               for line in (out / "iter_000" / "accepted.jsonl").read_text().splitlines())
    judges = json.loads((out / "iter_000" / "judges.json").read_text())
    assert {"embedding", "teacher", "chosen"} <= set(judges)
    assert "Gain over iteration 0" in done.stdout and (out / "report.html").exists()
    assert not [pid for pid in servers() if mark in _environ(pid)]  # every server the demo started is gone


def _environ(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/environ", "rb").read().replace(b"\0", b"\n").decode(errors="replace")
    except OSError:
        return ""
