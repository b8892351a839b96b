"""A stand-in teacher for tests and benchmarks: OpenAI-shaped chat completions on 127.0.0.1 that
fail on purpose.

`FakeTeacher(answer, faults={"429": 0.1, "500": 0.1, "stall": 0.05, ...}, seed=0)` serves
`POST /v1/chat/completions` from a thread (`with FakeTeacher(...) as teacher: teacher.base_url`).
Each request's fate is drawn from (seed, the prompt, how many times that prompt was asked), so a
prompt sees the same sequence of faults whatever order concurrent requests arrive in. Faults:
- `429`: Too Many Requests with `Retry-After: retry_after` seconds (or an HTTP date with `http_date`);
- `500`: an internal error;
- `stall`: answers only after `stall_s` (set it past the client's timeout);
- `cut`: closes the connection without a reply;
- `invalid_json`: 200 with a body that is not JSON;
- `truncated`: a reply with finish_reason "length".
The reply text is `answer(prompt)`; usage counts words. `delay_s` holds every reply (a benchmark's
fixed latency). Loopback only, never a real network.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("429", "500", "stall", "cut", "invalid_json", "truncated")


class FakeTeacher:
    def __init__(
        self,
        answer: Callable[[str], str] = lambda prompt: f"echo: {prompt}",
        faults: dict[str, float] | None = None,
        seed: int = 0,
        retry_after: float = 0.05,
        http_date: bool = False,
        stall_s: float = 1.0,
        delay_s: float = 0.0,
        model: str = "fake-teacher",
    ):
        unknown = set(faults or {}) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        self.answer, self.faults, self.seed = answer, dict(faults or {}), seed
        self.retry_after, self.http_date, self.stall_s, self.delay_s, self.model = (
            retry_after,
            http_date,
            stall_s,
            delay_s,
            model,
        )
        self.asked: Counter = Counter()  # prompt -> requests
        self.served: Counter = Counter()  # fate ("ok" or a fault) -> requests
        self.authorizations: set[str] = set()
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.teacher = self  # type: ignore[attr-defined]  # what the handler reads
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeTeacher:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def fate(self, prompt: str) -> str:
        """ "ok" or a fault, drawn from (seed, prompt, attempt number)."""
        with self._lock:
            attempt = self.asked[prompt]
            self.asked[prompt] += 1
        digest = hashlib.sha256(f"{self.seed}\0{prompt}\0{attempt}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        for fault, rate in self.faults.items():
            if draw < rate:
                return fault
            draw -= rate
        return "ok"

    def count(self, fate: str) -> None:
        with self._lock:
            self.served[fate] += 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # a burst of N connections must not overflow the listen backlog (a 1 s SYN retry)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers
    disable_nagle_algorithm = True  # headers and body are two writes: Nagle plus delayed ACKs would add 40 ms

    @property
    def teacher(self) -> FakeTeacher:
        return self.server.teacher  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.headers.get("Authorization"):
            self.teacher.authorizations.add(self.headers["Authorization"])
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        prompt = body["messages"][-1]["content"]
        fate = self.teacher.fate(prompt)
        self.teacher.count(fate)
        if self.teacher.delay_s:
            time.sleep(self.teacher.delay_s)
        if fate == "stall":
            time.sleep(self.teacher.stall_s)
        if fate == "cut":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)  # no reply at all: the client sees a dropped connection
        elif fate in ("429", "500", "invalid_json"):
            self._fault(fate)
        else:
            self._reply(prompt, fate)
        return None

    def _fault(self, fate: str) -> None:
        if fate == "429":
            when = (
                email.utils.formatdate(time.time() + self.teacher.retry_after, usegmt=True)
                if self.teacher.http_date
                else f"{self.teacher.retry_after:g}"
            )
            self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": when})
        elif fate == "500":
            self._send(500, {"error": {"message": "internal error"}})
        else:
            self._send_bytes(200, b'{"choices": [{"message": ')

    def _reply(self, prompt: str, fate: str) -> None:
        text = self.teacher.answer(prompt)
        usage = {"prompt_tokens": len(prompt.split()), "completion_tokens": len(text.split())}
        choice = {"index": 0, "message": {"role": "assistant", "content": text}}
        choice["finish_reason"] = "length" if fate == "truncated" else "stop"
        reply = {"id": "x", "object": "chat.completion", "model": self.teacher.model, "choices": [choice]}
        self._send(200, reply | {"usage": usage})

    def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), headers)

    def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing to answer
