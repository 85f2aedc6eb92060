"""The strong teacher on llama.cpp: our teacher phase against llama.cpp's own single stream, and what the
speed-ups buy, measured in one run on the same prompts.

Prompts: real teacher requests from seed examples, answered greedily (temperature 0) so that outputs can be
compared. --task intent (default): the project's intent data, 3 new examples per call, 2 shots, the task's JSON
schema. --task casehold: the strong-teacher study's CaseHOLD requests (benchmarks/effect/casehold_strong.yaml: one
new example per call, one shot; ../shared/data beside the checkout), where a reply copies long passages of its
parent's citing context: the case prompt-lookup decoding is made for. --task gsm8k: the study's GSM8K requests
(benchmarks/effect/gsm8k_strong.yaml: one new worked problem per call, one shot).
  reference   llama-server -np 1, the requests sent one after another by a bare HTTP client (server already up)
  ours@k      Teacher.complete through the llamacpp backend with k slots and k calls in flight, server start
              and stop included (what a teacher stage costs)
  draft       ours@1 with the 0.5B Qwen as the draft model for speculative decoding (-md)
  ngram       ours@1 with prompt-lookup decoding (llama-server's --spec-type ngram-simple: drafts copied from
              earlier text of the same sequence, prompt included; its defaults: a 12-token match, 48-token drafts)
  ngram4      the same with a 4-token match and 16-token drafts
Each arm prints completion tokens/s and how many outputs equal the reference's.

    python benchmarks/teacher_llamacpp.py [--requests 12] [--model qwen2.5-coder-1.5b] [--max-tokens 160]
    python benchmarks/teacher_llamacpp.py --task casehold --requests 6 --max-tokens 384 --slots 1,2
    python benchmarks/teacher_llamacpp.py --task gsm8k --requests 6 --max-tokens 256 --slots 1 --arms ngram

Final line: teacher_vs_llamacpp (ours with the default slots over the reference) and each speed-up's gain.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm2llm import data, llamacpp, models  # noqa: E402
from llm2llm.config import TeacherConfig, build_config, load_config  # noqa: E402
from llm2llm.loop import teacher_requests  # noqa: E402
from llm2llm.tasks import make_task  # noqa: E402
from llm2llm.teacher import Cache, LlamaCppBackend, Teacher  # noqa: E402

DEMO = ROOT / "src" / "llm2llm" / "demo"


def requests_for(task_name: str, n: int) -> list[dict]:
    """n teacher requests, one per seed example, as a teacher stage would send them."""
    if task_name in ("casehold", "gsm8k"):
        cfg = load_config(ROOT / "benchmarks" / "effect" / f"{task_name}_strong.yaml")
    else:
        cfg = build_config({"task": {"type": "classification",
                                     "description": "the intent of a request to a home assistant"},
                            "data": {"train": str(DEMO / "train.jsonl"), "test": str(DEMO / "test.jsonl"),
                                     "seed_size": 36, "test_size": 10}})
    task, seed, _ = data.load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))
    chosen = [{**ex, "student_prediction": ""} for ex in seed[:n]]
    return teacher_requests(task, chosen, seed, 0, cfg)


def reference(gguf: str, requests: list[dict], max_tokens: int) -> tuple[float, list[str]]:
    """llama.cpp alone: one slot, one request at a time, plain HTTP; (completion tokens/s, texts)."""
    texts, tokens = [], 0
    with llamacpp.serve(gguf, slots=1) as url:
        t0 = time.perf_counter()
        for r in requests:
            body = {"messages": r["messages"], "max_tokens": max_tokens, "temperature": 0.0, "seed": 0,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "reply", "schema": r["schema"],
                                                                               "strict": True}}}
            req = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=600) as reply:
                out = json.loads(reply.read())
            texts.append(out["choices"][0]["message"]["content"])
            tokens += out["usage"]["completion_tokens"]
        seconds = time.perf_counter() - t0
    return tokens / seconds, texts


def ours(model: str, requests: list[dict], max_tokens: int, slots: int, draft: str | None = None,
         server_args: tuple[str, ...] = ()):
    cfg = TeacherConfig(model=model, max_tokens=max_tokens, temperature=0.0, concurrency=slots, draft_model=draft,
                        server_args=list(server_args))
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Teacher(cfg, Cache(Path(tmp) / "c.sqlite"), LlamaCppBackend(cfg))
        t0 = time.perf_counter()
        replies = teacher.complete(requests)
        seconds = time.perf_counter() - t0
    return teacher.tally.completion_tokens / seconds, [r["text"] for r in replies]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("intent", "casehold", "gsm8k"), default="intent")
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--draft", default="qwen2.5-coder-0.5b")
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--slots", default="1,2,4,8", help="slot counts to try for ours")
    parser.add_argument("--arms", default="draft,ngram,ngram4", help="speed-ups to try besides the slot counts")
    args = parser.parse_args()
    requests = requests_for(args.task, args.requests)
    gguf = str(models.gguf_path(args.model))
    ours(args.model, requests[:2], args.max_tokens, 1)  # warm-up: page cache, first server start
    ref, expected = reference(gguf, requests, args.max_tokens)
    print(f"reference (llama-server -np 1, sequential): {ref:.1f} completion tokens/s", flush=True)
    figures, rates = [], {}
    arms = [(f"ours@{k}", int(k), None, ()) for k in args.slots.split(",")] + [
        ("draft", 1, args.draft, ()), ("ngram", 1, None, ("--spec-type", "ngram-simple")),
        ("ngram4", 1, None, ("--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "4",
                             "--spec-ngram-simple-size-m", "16"))]
    arms = [arm for arm in arms if arm[0].startswith("ours@") or arm[0] in args.arms.split(",")]
    for name, slots, draft, extra in arms:
        rate, texts = ours(args.model, requests, args.max_tokens, slots, draft, extra)
        same = sum(a == b for a, b in zip(texts, expected))
        rates[name] = rate
        print(f"{name}: {rate:.1f} completion tokens/s ({rate / ref:.2f}x the reference), "
              f"{same}/{len(texts)} outputs equal the reference's", flush=True)
    default = TeacherConfig().concurrency
    base = rates.get(f"ours@{default}", rates["ours@1"])
    figures.append(f"teacher_vs_llamacpp={base / ref:.2f}")
    figures += [f"{name}_gain={rate / rates['ours@1']:.2f}" for name, rate in rates.items() if name != "ours@1"]
    print(" ".join(figures))


if __name__ == "__main__":
    main()
