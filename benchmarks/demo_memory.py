"""Peak resident memory of the embedded demo (`llm2llm demo`, iterations 0-3, student and teacher in one
process), read from the kernel's accounting of the finished child process (ru_maxrss).

    python benchmarks/demo_memory.py [--out DIR]
"""
from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="run directory (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or str(Path(tmp) / "demo")
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "llm2llm.cli", "demo", "--out", out], check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.time() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(f"demo_seconds={seconds:.0f} demo_peak_rss_gib={peak_kib / 2**20:.2f}")


if __name__ == "__main__":
    main()
