"""Peak resident memory of the embedded demo (`llm2llm demo`, iterations 0-3): the llm2llm process and the
llama-server it starts for the teacher, together. Sampled every 0.1 s from /proc (the sum of the resident set
sizes of the process and all its descendants), beside the kernel's ru_maxrss, which counts only the largest
single process.

    python benchmarks/demo_memory.py [--out DIR]   # the demo's own output goes to DIR/demo.log
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> int:
    """Bytes resident in process `root` and its descendants now (processes that end meanwhile are skipped)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            pages = int(Path(entry.path, "statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        rss[int(entry.name)] = pages * PAGE
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="run directory (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or Path(tmp) / "demo")
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out.parent / f"{out.name}.log", "w") as log:
            t0, peak = time.time(), 0
            child = subprocess.Popen([sys.executable, "-m", "llm2llm.cli", "demo", "--out", str(out)], stdout=log,
                                     stderr=subprocess.STDOUT)
            while child.poll() is None:
                peak = max(peak, tree_rss(child.pid))
                time.sleep(0.1)
            seconds = time.time() - t0
        if child.returncode:
            sys.exit(f"error: llm2llm demo exited with {child.returncode}; see {log.name}")
    largest_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    print(f"demo_seconds={seconds:.0f} demo_peak_rss_gib={peak / 2**30:.2f} largest_process_rss_gib="
          f"{largest_kib / 2**20:.2f}")


if __name__ == "__main__":
    main()
