"""llama.cpp's `llama-server` for the benchmarks: found, or built with cmake from the llama.cpp sources
vendored in the `llama-cpp-python` sdist (the version installed here), then started on loopback.

    python benchmarks/llama_server.py            # build (once; cached in ~/.cache/llm2llm) and print its path
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "llm2llm"


def find_or_build() -> Path:
    """$LLAMA_SERVER, `llama-server` on PATH, an earlier build, or a new build (a few minutes on 2 cores)."""
    given = os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")
    if given:
        return Path(given)
    version = metadata.version("llama-cpp-python")
    binary = CACHE / f"llama.cpp-{version}" / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    with tempfile.TemporaryDirectory() as tmp:
        print(f"building llama-server from the llama-cpp-python {version} sdist (a few minutes)...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-binary",
                        ":all:", "--no-deps", "-q", "-d", tmp], check=True)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        source = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
        target = CACHE / f"llama.cpp-{version}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
             "-DLLAMA_BUILD_EXAMPLES=OFF"]
    subprocess.run(["cmake", "-S", str(target), "-B", str(target / "build"), *flags], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(target / "build"), "--target", "llama-server", "-j",
                    str(os.cpu_count() or 2)], check=True, stdout=subprocess.DEVNULL)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(gguf: str, slots: int = 8, context: int = 8192):
    """Yield the base URL (…/v1) of a llama-server with `slots` parallel slots, stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen([str(find_or_build()), "-m", gguf, "-np", str(slots), "-c", str(context),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"llama-server did not start (exit {proc.poll()})")
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    print(find_or_build())
