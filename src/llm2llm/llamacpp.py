"""llama.cpp's `llama-server`, the runtime of a GGUF teacher: found or built once, started on a free loopback port,
and always stopped: after use, on Ctrl-C, on an exception, and (Linux) when the process that started it is killed.

The binary is $LLAMA_SERVER, `llama-server` on PATH, or built with cmake from the llama.cpp sources vendored in the
`llama-cpp-python` sdist of the installed version, into the cache directory (a few minutes on 2 cores, once).
The build targets the machine's own CPU (llama.cpp's GGML_NATIVE), except Intel AMX: a VM can list amx_tile in
/proc/cpuinfo yet fault on its first instruction (ours did, Linux 6.18.44-fc), and then a native build crashes at
the first matrix product; for an AMX build of your own, set $LLAMA_SERVER.

    python -m llm2llm.llamacpp          # build if needed and print its path
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

from . import UserError
from .models import cache_dir

VERSION = "0.3.36"  # llama-cpp-python, whose vendored llama.cpp we build when none is installed


def _built_binary() -> Path:
    try:
        version = metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        version = VERSION
    return cache_dir() / f"llama.cpp-{version}" / "build" / "bin" / "llama-server"


def find() -> Path | None:
    """$LLAMA_SERVER, `llama-server` on PATH, or an earlier build; None when there is none yet."""
    given = os.environ.get("LLAMA_SERVER") or shutil.which("llama-server")
    if given:
        return Path(given)
    binary = _built_binary()
    return binary if binary.exists() else None


def sources(fresh: bool = False) -> Path:
    """The llama.cpp sources vendored in the llama-cpp-python sdist (downloaded from PyPI once) in the cache
    directory: what llama-server is built from, and llama.cpp's converters (convert_lora_to_gguf.py)."""
    target = _built_binary().parents[2]
    if (target / "CMakeLists.txt").exists() and not fresh:
        return target
    version = target.name.removeprefix("llama.cpp-")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-binary",
                        "llama-cpp-python", "--no-deps", "-q", "-d", tmp], check=True)
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter="data")
        source = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
    return target


def build() -> Path:
    """Build llama-server from the llama-cpp-python sdist (downloaded from PyPI) into the cache directory."""
    binary = _built_binary()
    if not shutil.which("cmake"):
        raise UserError("teacher.backend 'llamacpp': building llama-server needs cmake and a C++ compiler "
                        "(or set $LLAMA_SERVER to an installed llama-server)")
    version = binary.parents[2].name.removeprefix("llama.cpp-")
    print(f"building llama-server from the llama-cpp-python {version} sdist (once; a few minutes)...",
          file=sys.stderr, flush=True)
    target = sources(fresh=True)
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace") if Path("/proc/cpuinfo").exists() else ""
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
             "-DLLAMA_BUILD_EXAMPLES=OFF", "-DBUILD_SHARED_LIBS=OFF", *no_amx_flags(platform.machine(), cpuinfo)]
    subprocess.run(["cmake", "-S", str(target), "-B", str(target / "build"), *flags], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(target / "build"), "--target", "llama-server", "-j",
                    str(os.cpu_count() or 2)], check=True, stdout=subprocess.DEVNULL)
    return binary


def no_amx_flags(machine: str, cpuinfo: str) -> list[str]:
    """cmake flags that keep AMX out of a native build on an x86 CPU that lists it (elsewhere none: the flags are
    x86-only). An explicit -mno-* wins over the -march=native that ggml adds, in either order (checked: GCC 12)."""
    if machine.lower() not in ("x86_64", "amd64") or "amx_tile" not in cpuinfo.split():
        return []
    off = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    return [f"-DCMAKE_C_FLAGS={off}", f"-DCMAKE_CXX_FLAGS={off}"]


def find_or_build() -> Path:
    return find() or build()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent():
    """A preexec_fn: the child gets SIGTERM when its parent dies, SIGKILL included (Linux's PR_SET_PDEATHSIG).
    libc is looked up before the fork, so the child only makes the call."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return None
    parent = os.getpid()

    def arm():
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call
            os._exit(1)
    return arm


def _wait_healthy(proc: subprocess.Popen, port: int, log: Path, timeout: float) -> None:
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise UserError(f"llama-server did not start (exit {proc.poll()}): {' '.join(tail)[:200]}")
        time.sleep(0.25)


def give_back_freed_memory() -> None:
    """Return the heap pages this process has freed (the last training's tensors) to the system, so that they do
    not stay counted against it while a server starts beside it (glibc keeps them otherwise). Elsewhere: no-op."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def serve(gguf: str | Path, slots: int = 1, context_per_slot: int = 4096, args: list[str] = (),
          log: Path | None = None, timeout: float = 300):
    """Yield the base URL (…/v1) of a llama-server for `gguf` with `slots` parallel slots; stopped on exit."""
    give_back_freed_memory()
    port = free_port()
    log = log or Path(tempfile.gettempdir()) / f"llm2llm-llama-server-{port}.log"
    command = [str(find_or_build()), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port),
               "-np", str(slots), "-c", str(slots * context_per_slot), *args]
    with open(log, "ab") as sink:
        proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent(), start_new_session=True)
    try:
        _wait_healthy(proc, port, log, timeout)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    print(find_or_build())
