import json
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
