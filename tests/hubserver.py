"""A local stand-in for the Hugging Face Hub's read endpoints, for ``hf://`` tests: http.server on
127.0.0.1 in a thread, serving dataset repositories from a local folder to huggingface_hub's
HfFileSystem (the client phifilter uses for ``hf://``).

``<root>/<owner>/<name>/...`` is served as the dataset repository ``owner/name``, branch ``main``,
one commit whose id hashes the files' names and contents. Only what HfFileSystem calls to read is
served (found by reading huggingface_hub's hf_file_system.py / hf_api.py and logging requests):

* ``GET /api/datasets/{id}[/revision/{rev}]``: the repository's info (``id``, ``sha``, ``siblings``);
* ``GET /api/datasets/{id}/tree/{rev}[/{path}]?recursive=&expand=``: a folder's entries (one page);
* ``GET``/``HEAD /datasets/{id}/resolve/{rev}/{path}``: a file, with ``Range`` requests, and the
  ``ETag``, ``X-Repo-Commit`` and ``Content-Length`` headers huggingface_hub reads.

(``paths-info``, which HfFileSystem.info calls only with ``refresh=True`` or ``expand_info``, is not
served: phifilter's reads never reached it.)

Errors carry the Hub's ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``),
which huggingface_hub turns into its exception types. With ``token`` set, every request needs
``Authorization: Bearer <token>``: without one the answer is 401 ``RepoNotFound`` (as the Hub
answers for a private repository), with a wrong one 401 "Invalid credentials in Authorization
header". ``requests`` records (method, path, had-a-token, Range header or None) of every request,
for assertions.

Point huggingface_hub at it with ``HF_ENDPOINT=server.url`` in a subprocess's environment (it reads
its constants once, at import) or with the ``endpoint`` storage option.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

REVISION = "main"


def _blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id, as the Hub gives


class HubServer:
    """``with HubServer(root) as hub: ...``: serves ``root`` on ``hub.url`` until the block ends."""

    def __init__(self, root, token: str | None = None):
        self.root = Path(root)
        self.token = token
        self.requests: list[tuple[str, str, bool, str | None]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "HubServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hubserver", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- the repository model
    def repo(self, repo_id: str) -> Path | None:
        parts = repo_id.split("/")
        if len(parts) != 2 or any(p in ("", ".", "..") for p in parts):
            return None
        folder = self.root.joinpath(*parts)
        return folder if folder.is_dir() else None

    @staticmethod
    def commit(folder: Path) -> str:
        h = hashlib.sha1()
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes())
        return h.hexdigest()

    @staticmethod
    def entry(folder: Path, path: Path) -> dict:
        rel = path.relative_to(folder).as_posix()
        if path.is_dir():
            return {"type": "directory", "path": rel, "oid": hashlib.sha1(rel.encode()).hexdigest()}
        data = path.read_bytes()
        return {"type": "file", "path": rel, "size": len(data), "oid": _blob_oid(data)}


def _handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet; hub.requests is the log
            pass

        # -- replies
        def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _json(self, status: int, doc, head: bool = False) -> None:
            self._send(status, json.dumps(doc).encode(), {"Content-Type": "application/json"}, head)

        def _error(self, status: int, code: str | None, message: str, head: bool = False) -> None:
            headers = {"Content-Type": "application/json", "X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._send(status, json.dumps({"error": message}).encode(), headers, head)

        def _authorised(self, head: bool = False) -> bool:
            given = self.headers.get("Authorization", "")
            with hub._lock:
                hub.requests.append((self.command, self.path, given.startswith("Bearer "), self.headers.get("Range")))
            if hub.token is None or given == f"Bearer {hub.token}":
                return True
            if given:
                self._error(401, None, "Invalid credentials in Authorization header", head)
            else:
                self._error(401, "RepoNotFound", "Repository not found", head)
            return False

        # -- routing
        def do_GET(self) -> None:
            self._route(head=False)

        def do_HEAD(self) -> None:
            self._route(head=True)

        def _route(self, head: bool) -> None:
            if not self._authorised(head):
                return
            url = urlsplit(self.path)
            parts = url.path.split("/")
            query = parse_qs(url.query)
            if len(parts) >= 5 and parts[1:3] == ["api", "datasets"]:
                repo_id = parts[3] + "/" + parts[4]
                rest = parts[5:]
                if not rest:
                    return self._info(repo_id, REVISION, head)
                if rest[0] == "revision" and len(rest) == 2:
                    return self._info(repo_id, unquote(rest[1]), head)
                if rest[0] == "tree" and len(rest) >= 2:
                    recursive = query.get("recursive", ["False"])[0].lower() == "true"
                    return self._tree(repo_id, unquote(rest[1]), unquote("/".join(rest[2:])), recursive, head)
            if len(parts) >= 7 and parts[1] == "datasets" and parts[4] == "resolve":
                return self._resolve(parts[2] + "/" + parts[3], unquote(parts[5]), unquote("/".join(parts[6:])), head)
            self._error(404, None, f"no route for {self.command} {self.path}", head)

        # -- endpoints
        def _repo_and_revision(self, repo_id: str, revision: str, head: bool = False) -> Path | None:
            folder = hub.repo(repo_id)
            if folder is None:
                self._error(404, "RepoNotFound", "Repository not found", head)
                return None
            if revision not in (REVISION, HubServer.commit(folder)):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
                return None
            return folder

        @staticmethod
        def _inside(folder: Path, rel: str) -> Path | None:
            rel = rel.strip("/")
            if any(p in ("..", ".") for p in rel.split("/")):
                return None
            return folder / rel if rel else folder

        def _info(self, repo_id: str, revision: str, head: bool) -> None:
            folder = self._repo_and_revision(repo_id, revision, head)
            if folder is None:
                return
            siblings = [{"rfilename": p.relative_to(folder).as_posix()}
                        for p in sorted(folder.rglob("*")) if p.is_file()]
            self._json(200, {"id": repo_id, "sha": HubServer.commit(folder), "private": hub.token is not None,
                             "siblings": siblings}, head)

        def _tree(self, repo_id: str, revision: str, rel: str, recursive: bool, head: bool) -> None:
            folder = self._repo_and_revision(repo_id, revision, head)
            if folder is None:
                return
            target = self._inside(folder, rel)
            if target is None or not target.is_dir():
                self._error(404, "EntryNotFound", f"{rel} does not exist on {revision}", head)
                return
            found = target.rglob("*") if recursive else target.iterdir()
            self._json(200, [HubServer.entry(folder, p) for p in sorted(found)], head)

        def _resolve(self, repo_id: str, revision: str, rel: str, head: bool) -> None:
            folder = self._repo_and_revision(repo_id, revision, head)
            if folder is None:
                return
            target = self._inside(folder, rel)
            if target is None or not target.is_file():
                self._error(404, "EntryNotFound", f"{rel} does not exist on {revision}", head)
                return
            data = target.read_bytes()
            headers = {"ETag": f'"{_blob_oid(data)}"', "X-Repo-Commit": HubServer.commit(folder),
                       "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                first, _, last = wanted[len("bytes="):].partition("-")
                if first == "":  # a suffix: the last N bytes
                    start, end = max(0, len(data) - int(last)), len(data) - 1
                else:
                    start, end = int(first), min(int(last) if last else len(data) - 1, len(data) - 1)
                if start >= len(data) or start > end:
                    self._send(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"}, head)
                    return
                headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                self._send(206, data[start:end + 1], headers, head)
                return
            self._send(200, data, headers, head)

    return Handler


def hub_env(hub: HubServer, home, **extra) -> dict:
    """An environment for a CLI subprocess that talks to ``hub`` (and never to the real Hub), with
    ``home`` as its HF_HOME (so no token saved by a login on this machine is sent)."""
    env = dict(os.environ)
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        env.pop(k, None)
    env["HF_ENDPOINT"] = hub.url
    env["HF_HOME"] = str(home)
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env.update(extra)
    return env
