"""Training under `accelerate launch`: two CPU processes (DDP over gloo) inside a real run."""
import json

import pytest
from typer.testing import CliRunner

from conftest import tiny_config
from llm2llm.cli import app

pytestmark = pytest.mark.slow


def test_loop_trains_with_two_processes_under_accelerate_launch(tmp_path, intent_files):
    # torchrun-style launch; without a GPU each process runs on the CPU and DDP talks over gloo
    args = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", "0"]
    path = tiny_config(tmp_path, intent_files, student={"accelerate_args": args, "epochs": 4, "batch_size": 1},
                       loop={"augment": "random", "random_counts": [3]}, teacher={"max_tokens": 16},
                       output={"keep_models": "all"})
    run_dir = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(run_dir)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [0, 1]
    model = run_dir / "iter_000" / "model"
    stats = json.loads((model / "train_stats.json").read_text())
    assert stats["processes"] == 2 and (model / "adapter_model.safetensors").exists()
    # 6 seed examples over 2 processes at 1 per device: 3 steps per epoch
    assert stats["steps"] == 12 and stats["tokens"] > 0
    assert len(stats["losses"]) == 2 and stats["losses"][1] < stats["losses"][0]  # logged every 5 steps: it goes down
    assert "launch.log" in {p.name for p in model.iterdir()}
    assert (run_dir / "iter_001" / "model" / "DONE").exists() and rows[1]["steps"] > 0
