"""A real chat-completions HTTP server on 127.0.0.1 for the labelling tests, scriptable to fail.

It speaks ``POST /v1/chat/completions`` like OpenAI/vLLM. By default it answers every request
with a short reason and ``Educational score: S`` where S is derived from the document, so tests
can check scores end to end. Tests script faults in two ways:

* ``server.queue(Response(...), ...)``: the next requests get these responses, in order;
* ``server.script = fn``: ``fn(doc, body) -> Response | None`` decides per request
  (None: the default answer).

Every request is recorded (document text, headers, arrival time), so tests count requests
per document at the server: the ground truth for "never paid twice".

Use the ``chat_server`` fixture (import it into a test module).
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

FENCE = re.compile(r"^DOCUMENT-[0-9a-f]{24,64}(?:-END)*$", re.MULTILINE)


@dataclass
class Response:
    status: int = 200
    body: bytes | dict | None = None  # dict -> JSON; None with 200 -> the default answer
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (for timeouts)
    text: str | None = None  # 200 with this reply text
    close_after: bool = False  # close the connection after answering, without saying so


@dataclass
class Request:
    doc: str | None
    body: dict | None
    headers: dict
    at: float
    status: int = 0


def default_score(doc: str) -> int:
    return sum(doc.encode()) % 6


def completion(text: str, prompt_tokens: int = 100, completion_tokens: int = 20) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def document_of(body: dict) -> str | None:
    """The fenced document inside the first user message (None if the request has none).

    The first, not the last: a repair re-ask ends with a short question after the first exchange.
    """
    try:
        content = next(m["content"] for m in body["messages"] if m.get("role") == "user")
    except (KeyError, TypeError, StopIteration, AttributeError):
        return None
    fences = list(FENCE.finditer(content))
    if len(fences) < 2:
        return None
    first, last = fences[0], fences[-1]
    assert first.group(0) == last.group(0), "opening and closing fences differ"
    return content[first.end() + 1 : last.start() - 1]


class ChatServer:
    def __init__(self):
        self.requests: list[Request] = []
        self.script = None
        self._queue: list[Response] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = None
                doc = document_of(body) if isinstance(body, dict) else None
                req = Request(doc, body, dict(self.headers), time.monotonic())
                with server._lock:
                    server.requests.append(req)
                    response = server._queue.pop(0) if server._queue else None
                if response is None and server.script is not None:
                    response = server.script(doc, body)
                if response is None:
                    response = Response()
                if self.path.rstrip("/") != "/v1/chat/completions":
                    response = Response(404, {"error": {"message": f"no route {self.path}"}})
                req.status = response.status
                if response.delay:
                    time.sleep(response.delay)
                if response.status == 200 and response.body is None:
                    text = response.text if response.text is not None else (
                        f"Readable code with some explanation.\nEducational score: {default_score(doc or '')}")
                    payload = json.dumps(completion(text)).encode()
                elif isinstance(response.body, dict):
                    payload = json.dumps(response.body).encode()
                else:
                    payload = response.body or b""
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in response.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                    if response.close_after:
                        self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "ChatServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def queue(self, *responses: Response) -> None:
        with self._lock:
            self._queue.extend(responses)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._queue.clear()
            self.script = None

    def count(self, status: int | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if status is None or r.status == status)

    def per_doc(self, status: int | None = 200) -> dict[str, int]:
        """How many requests (with the given status; None: any) each document got."""
        counts: dict[str, int] = {}
        with self._lock:
            for r in self.requests:
                if status is None or r.status == status:
                    counts[r.doc] = counts.get(r.doc, 0) + 1
        return counts


@pytest.fixture
def chat_server():
    server = ChatServer().start()
    yield server
    server.stop()
