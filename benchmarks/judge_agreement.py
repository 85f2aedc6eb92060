"""How far each judge can be trusted, per task: how often it gives seed examples their own label or answer.

  embedding   nearest label centroid over MiniLM embeddings of the seed, leave-one-out (classification only)
  teacher     the teacher (Qwen2.5-Coder-1.5B on llama.cpp by default), greedy, classifying / re-solving /
              picking the option for the first --probe seed examples: what `judge: auto` measures at the start
              of a run, and what it decides on
  teacher_json  math only: the same teacher asked for {"solution", "final_number"} under a JSON schema, the judge
              llm2llm used before 2026-12-06 (it wrote a plan and guessed the number), on the same seed examples

    python benchmarks/judge_agreement.py [--tasks intent,sst2,gsm8k,casehold] [--probe 32] [--teacher qwen2.5-coder-1.5b]

Final line: <task>_embedding=... <task>_teacher=... (<task>_teacher_json=... for math) for each task.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm2llm import data, judge as judges  # noqa: E402
from llm2llm.config import load_config  # noqa: E402
from llm2llm.tasks import ClassificationTask, MathTask, make_task, parse_number  # noqa: E402
from llm2llm.teacher import Cache, Teacher, make_backend  # noqa: E402

CONFIGS = {"intent": "benchmarks/effect/intent.yaml", "sst2": "examples/sst2.yaml", "gsm8k": "examples/gsm8k.yaml",
           "casehold": "examples/casehold.yaml"}


class JsonMathJudge:
    """A math task whose judge answers in JSON under a schema (llm2llm's math judge before 2026-12-06)."""

    def __init__(self, task: MathTask):
        self.task = task

    def __getattr__(self, name):
        return getattr(self.task, name)

    def judge_messages(self, ex: dict) -> list[dict]:
        return [{"role": "system", "content": "You answer exactly and reply with JSON only."},
                {"role": "user", "content": f"Solve this problem step by step.\nQuestion: {ex[self.input_field]}\n"
                 'Reply with JSON only: {"solution": <your steps>, "final_number": <the answer>}.'}]

    def judge_schema(self, ex: dict) -> dict:
        return {"type": "object", "properties": {"solution": {"type": "string"}, "final_number": {"type": "number"}},
                "required": ["solution", "final_number"], "additionalProperties": False}

    def judge_verdict(self, text: str, ex: dict) -> str | None:
        found = parse_number(text.rsplit("final_number", 1)[-1]) if "final_number" in text else None
        return None if self.task.score(found, ex) else f"judge: {found}"


def measure(name: str, teacher_model: str, probe: int) -> tuple[float | None, float, float | None, float]:
    cfg = load_config(ROOT / CONFIGS[name], [f"data.seed_size={max(probe, 36)}", "teacher.backend=llamacpp",
                                             f"teacher.model={teacher_model}"])
    task, seed, _ = data.load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))
    embedding = None
    if isinstance(task, ClassificationTask):
        embedding = judges.make_judge("embedding", cfg.filters.judge_model, task, seed).seed_agreement
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Teacher(cfg.teacher, Cache(Path(tmp) / "c.sqlite"), make_backend(cfg.teacher))
        t0 = time.time()
        share, _ = judges.teacher_seed_agreement(task, seed, teacher, probe)
        seconds = time.time() - t0
        as_json = judges.teacher_seed_agreement(JsonMathJudge(task), seed, teacher, probe)[0] \
            if isinstance(task, MathTask) else None
    return embedding, share, as_json, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="intent,sst2,gsm8k,casehold")
    parser.add_argument("--probe", type=int, default=32)
    parser.add_argument("--teacher", default="qwen2.5-coder-1.5b")
    args = parser.parse_args()
    figures = []
    print(f"| task | embedding judge (leave-one-out) | teacher judge ({args.teacher}, {args.probe} seed) "
          "| the teacher judge in JSON (math) | seconds (teacher judge) |")
    print("|---|---|---|---|---|")
    for name in args.tasks.split(","):
        embedding, teacher, as_json, seconds = measure(name, args.teacher, args.probe)
        shown = [f"{x:.2f}" if x is not None else "n/a" for x in (embedding, as_json)]
        print(f"| {name} | {shown[0]} | {teacher:.2f} | {shown[1]} | {seconds:.0f} |", flush=True)
        figures += ([f"{name}_embedding={embedding:.2f}"] if embedding is not None else []) + \
            [f"{name}_teacher={teacher:.2f}"] + ([f"{name}_teacher_json={as_json:.2f}"] if as_json is not None else [])
    print(" ".join(figures))


if __name__ == "__main__":
    main()
