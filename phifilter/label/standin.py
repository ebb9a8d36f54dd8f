"""A stand-in for an LLM endpoint: an OpenAI-compatible chat server on 127.0.0.1.

For demos, notebooks and tests that must run offline and free: it answers
``POST /v1/chat/completions`` (and ``GET /v1/models``) the way OpenAI, vLLM and Ollama do, but
the "model" is a transparent heuristic over the document found between the prompt's fences
(see :func:`heuristic_rating`), or any function you give it. Its labels are NOT a substitute
for a real LLM's: use it to see the pipeline work, then point ``--base-url`` at a real model.

It also plays a misbehaving endpoint, which is how the test suite checks retries, timeouts,
repair re-asks and "never paid twice": :meth:`StandinServer.queue` gives the next requests
scripted answers (:class:`Canned`: an HTTP status, a raw or JSON body, headers, a delay, a reply
text, a dropped connection), ``script = fn(doc, body) -> Canned | None`` decides per request,
and every chat request is recorded (:class:`ChatRequest`: document, body, headers, arrival
time, status) so requests can be counted per document at the server.

Example::

    from phifilter.label import OpenAIChatBackend, StandinServer, label_file
    with StandinServer() as server:
        backend = OpenAIChatBackend(server.url, server.model, api_key="unused")
        label_file("seed.parquet", "labels.parquet", backend)
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# The prompt fences the document with a line "DOCUMENT-<hex>" before and after it.
FENCE = re.compile(r"^DOCUMENT-[0-9a-f]{24,64}(?:-END)*$", re.MULTILINE)
EXPLAINING_WORDS = re.compile(r"\b(returns?|because|example|computes?|algorithm|complexity|explain\w*|"
                              r"step|note|if|the|this|we)\b", re.IGNORECASE)


def document_in(messages: list) -> str | None:
    """The fenced document of a chat request: in the first user message that has one (a repair
    re-ask ends with a short question after the first exchange; a template without a system
    role puts the rubric in a user message of its own). None when there is none."""
    try:
        contents = [m["content"] for m in messages if m.get("role", "user") == "user"]
    except (KeyError, TypeError, AttributeError):
        return None
    for content in contents:
        if not isinstance(content, str):
            continue
        fences = list(FENCE.finditer(content))
        if len(fences) >= 2:
            return content[fences[0].end() + 1: fences[-1].start() - 1]
    return None


def heuristic_rating(document: str) -> tuple[int, str]:
    """A crude 0-5 educational-value rating of code, with the reasons that earned it.

    One point each for: defining functions or classes; a docstring or comments that explain
    (over 20% of the lines); a lot of explanation (over 35%); worked examples (doctests);
    readable, mostly short lines. One point off for a copyright or licence header; two when
    most lines are imports or assignments of constants (configuration and boilerplate).
    """
    lines = [ln.strip() for ln in document.splitlines() if ln.strip()]
    if not lines:
        return 0, "empty document"
    reasons, score = [], 0
    if re.search(r"^\s*(def|class)\s+\w+", document, re.MULTILINE):
        score += 1
        reasons.append("defines functions or classes")
    in_doc, explaining = False, 0
    for ln in lines:
        quotes = ln.count('"""') + ln.count("'''")
        if ln.startswith("#") or in_doc or quotes:
            explaining += bool(EXPLAINING_WORDS.search(ln)) or ln.startswith("#")
        if quotes % 2:
            in_doc = not in_doc
    share = explaining / len(lines)
    if share > 0.20:
        score += 1
        reasons.append(f"{100 * share:.0f}% of lines explain")
    if share > 0.35:
        score += 1
        reasons.append("explains at length")
    if ">>> " in document:
        score += 1
        reasons.append("has worked examples")
    if sum(len(ln) <= 88 for ln in lines) / len(lines) > 0.9:
        score += 1
        reasons.append("readable line lengths")
    if re.search(r"copyright|licen[cs]e|all rights reserved", document[:1500], re.IGNORECASE):
        score -= 1
        reasons.append("opens with legal boilerplate")
    boiler = sum(bool(re.match(r"(import |from \S+ import |[A-Z_][A-Z0-9_]* = |__\w+__ = )", ln)) for ln in lines)
    if boiler / len(lines) > 0.5:
        score -= 2
        reasons.append("mostly imports or constants")
    return max(0, min(5, score)), "; ".join(reasons) or "no educational features found"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        import sys

        # A client dropping its keep-alive connection is normal, not worth a traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


@dataclass
class Canned:
    """A scripted answer to one chat request (see :meth:`StandinServer.queue`)."""

    status: int = 200
    body: bytes | dict | None = None  # a dict is sent as JSON; None with 200: a normal answer
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a slow or timed-out endpoint)
    text: str | None = None  # with 200 and no body: the reply text instead of the rating
    close_after: bool = False  # close the connection after answering, without saying so


@dataclass
class ChatRequest:
    """One chat request as the server saw it."""

    doc: str | None  # the fenced document (None when the request has none)
    body: dict | None  # the parsed JSON body (None when it was not JSON)
    headers: dict
    at: float  # time.monotonic() on arrival
    status: int = 0  # the HTTP status it was answered with


class StandinServer:
    """An OpenAI-compatible chat endpoint on 127.0.0.1 (a free port) that rates with ``rate``.

    ``rate(document) -> int | (int, reason)``; the default is :func:`heuristic_rating`.
    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``requests`` lists the
    chat requests received (:class:`ChatRequest`), :meth:`count` and :meth:`per_doc` count them.
    """

    def __init__(self, rate: Callable[[str], int | tuple[int, str]] | None = None,
                 model: str = "standin-heuristic", port: int = 0):
        self.rate = rate or heuristic_rating
        self.model = model
        self.requests: list[ChatRequest] = []
        self.script: Callable[[str | None, dict | None], Canned | None] | None = None
        self._queue: list[Canned] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep notebooks and test output clean
                pass

            def _send(self, status: int, payload: bytes | dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    body = json.loads(raw)
                    messages = body["messages"]
                except (ValueError, KeyError, TypeError):
                    body, messages = None, None
                req = ChatRequest(document_in(messages) if messages is not None else None,
                                  body if isinstance(body, dict) else None, dict(self.headers), time.monotonic())
                if messages is None:  # not a chat request (or one cut short: its client was killed
                    # while sending it): refused as a real server would, never given a scripted answer
                    server._record(req)
                    canned = Canned(400, {"error": {"message": "expected a JSON body with 'messages'"}})
                else:
                    canned = server._next(req) or Canned()
                req.status = canned.status
                if canned.delay:
                    time.sleep(canned.delay)
                payload = canned.body
                if canned.status == 200 and payload is None:
                    text = canned.text if canned.text is not None else server.answer(req.doc)
                    payload = server.completion(text, messages or [], (req.body or {}).get("model", server.model))
                try:
                    self._send(canned.status, payload if payload is not None else b"", canned.headers)
                    if canned.close_after:
                        self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout)

        self._httpd = _QuietServer(("127.0.0.1", port), Handler)
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None

    def answer(self, doc: str | None) -> str:
        """The reply text for a document: the rating's reason, then "Educational score: S"."""
        if doc is None:
            return "I found no fenced document to rate.\nEducational score: 0"
        rated = self.rate(doc)
        score, reason = rated if isinstance(rated, tuple) else (rated, "rated by a custom function")
        return f"{reason}.\nEducational score: {int(score)}"

    def completion(self, text: str, messages: list, model: str) -> dict:
        """A chat.completion object; token counts are estimated as characters / 4."""
        prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict)) // 4
        return {
            "id": f"chatcmpl-standin-{len(self.requests)}", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(text) // 4,
                      "total_tokens": prompt_tokens + len(text) // 4},
        }

    def _record(self, req: ChatRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _next(self, req: ChatRequest) -> Canned | None:
        """Record a request; its scripted answer (queued first, then ``script``), if any."""
        with self._lock:
            self.requests.append(req)
            canned = self._queue.pop(0) if self._queue else None
        if canned is None and self.script is not None:
            canned = self.script(req.doc, req.body)
        return canned

    def queue(self, *answers: Canned) -> None:
        """The next requests get these answers, in order, before ``script`` or the rating."""
        with self._lock:
            self._queue.extend(answers)

    def reset(self) -> None:
        """Forget the requests seen, the queue and the script."""
        with self._lock:
            self.requests.clear()
            self._queue.clear()
            self.script = None

    def count(self, status: int | None = None) -> int:
        """Chat requests received (answered with ``status``, when given)."""
        with self._lock:
            return sum(1 for r in self.requests if status is None or r.status == status)

    def per_doc(self, status: int | None = 200) -> dict[str | None, int]:
        """How many requests (answered with ``status``; None: any) each document got."""
        counts: dict[str | None, int] = {}
        with self._lock:
            for r in self.requests:
                if status is None or r.status == status:
                    counts[r.doc] = counts.get(r.doc, 0) + 1
        return counts

    def start(self) -> "StandinServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name="phifilter-standin")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "StandinServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
