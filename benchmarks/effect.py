"""Does the loop help? Plain fine-tuning vs LLM2LLM (3 iterations) vs random augmentation with the same
teacher calls, over several seed samples, on SST-2, a 6-class intent set and GSM8K (configs in
benchmarks/effect/). Each task runs `llm2llm effect`; its table goes to RUN/<task>/effect.md.

    python benchmarks/effect.py [--tasks intent,sst2,gsm8k] [--seeds 0,1,2] [--out runs/effect]

Final line: name=value figures, LLM2LLM's and random augmentation's mean gain over plain fine-tuning per task.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="intent,sst2,gsm8k")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "effect")
    args = parser.parse_args()
    figures = []
    for name in args.tasks.split(","):
        out = args.out / name
        t0 = time.time()
        cmd = [sys.executable, "-m", "llm2llm.cli", "effect", str(ROOT / "benchmarks" / "effect" / f"{name}.yaml"),
               "--seeds", args.seeds, "--out", str(out)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        minutes = (time.time() - t0) / 60
        summary = json.loads((out / "effect.json").read_text())
        print((out / "effect.md").read_text() + f"\nWall time for {name}: {minutes:.1f} min\n", flush=True)
        for arm in ("llm2llm", "random"):
            g = summary["gain"][arm]
            figures.append(f"{name}_{arm}_gain={g['mean']:+.3f}±{g['sd']:.3f}")
        figures.append(f"{name}_minutes={minutes:.1f}")
    print(" ".join(figures))


if __name__ == "__main__":
    main()
