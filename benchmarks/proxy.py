"""An HTTP proxy in front of an OpenAI-compatible server, for the teacher's fault tests and benchmarks.

It forwards every request, and can add a fixed delay (a hosted API's round trip) and inject faults on a share
of chat-completion requests: a 500, a 429 with Retry-After, a hang past the client's timeout, or a 200 whose
body is garbage (after the server really did the work). Every request is logged with what was done to it.

    python benchmarks/proxy.py --upstream http://127.0.0.1:8080 --port 9000 --fault-rate 0.2 --delay-ms 300
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("500", "429", "timeout", "garbage")


class Server(ThreadingHTTPServer):
    """A thread per request, behind a listen queue that holds a burst of connections. The standard library's
    queue of 5 overflows when more clients than that connect at once (16 calls in flight do): the kernel then
    drops their handshakes, and those calls wait a 1 s SYN retry or fail with a reset connection."""
    daemon_threads = True
    request_queue_size = 1024


class FaultProxy:
    def __init__(self, upstream: str, fault_rate: float = 0.0, delay_s: float = 0.0, hang_s: float = 5.0,
                 retry_after_s: int = 1, seed: int = 0, port: int = 0):
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port or 80)
        self.fault_rate, self.delay_s, self.hang_s, self.retry_after_s = fault_rate, delay_s, hang_s, retry_after_s
        self.rng, self.lock = random.Random(seed), threading.Lock()
        self.log: list[dict] = []  # {t, digest, fault, status}
        self.server = Server(("127.0.0.1", port), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def faults(self) -> list[dict]:
        return [entry for entry in self.log if entry["fault"]]

    def _pick_fault(self, path: str) -> str | None:
        if not path.endswith("/chat/completions"):
            return None
        with self.lock:
            return self.rng.choice(FAULTS) if self.rng.random() < self.fault_rate else None

    def _forward(self, method: str, path: str, headers, body: bytes) -> tuple[int, list, bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=600)
        try:
            keep = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            conn.request(method, path, body=body or None, headers=keep)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: no new connection per call

            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: bytes, headers=()) -> None:
                self.send_response(status)
                for key, value in headers:
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._pick_fault(self.path)
                entry = {"t": time.time(), "digest": hashlib.sha256(body).hexdigest()[:16], "fault": fault,
                         "path": self.path}
                with proxy.lock:
                    proxy.log.append(entry)
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                try:
                    if fault == "500":
                        self._reply(500, b'{"error": {"message": "injected server error"}}',
                                    [("Content-Type", "application/json")])
                    elif fault == "429":
                        self._reply(429, b'{"error": {"message": "injected rate limit"}}',
                                    [("Content-Type", "application/json"), ("Retry-After", str(proxy.retry_after_s))])
                    elif fault == "timeout":
                        time.sleep(proxy.hang_s)  # the client gives up first; then drop the connection
                        self.close_connection = True
                    else:
                        status, headers, data = proxy._forward(method, self.path, self.headers, body)
                        if fault == "garbage":  # the work was done upstream; the body comes back mangled
                            with proxy.lock:
                                half = proxy.rng.random() < 0.5
                            garbled = data[: len(data) // 2] if half else b"<html>bad gateway</html>"
                            self._reply(200, garbled, [("Content-Type", "application/json")])
                        else:
                            self._reply(status, data, headers)
                    entry["status"] = "sent"
                except (BrokenPipeError, ConnectionResetError):
                    entry["status"] = "client gone"

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8080")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--hang-s", type=float, default=5.0)
    args = parser.parse_args()
    with FaultProxy(args.upstream, args.fault_rate, args.delay_ms / 1000, args.hang_s, port=args.port) as proxy:
        print(f"proxy on {proxy.url} -> {args.upstream}", flush=True)
        proxy.thread.join()


if __name__ == "__main__":
    main()
