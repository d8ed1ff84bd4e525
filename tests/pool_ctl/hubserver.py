"""A loopback stand-in for the Hugging Face hub: the routes huggingface_hub calls to list and fetch.

- GET  /api/models/{repo}/tree/{revision}  the file list (paths, sizes, LFS sha256)
- HEAD /{repo}/resolve/{revision}/{file}   ETag (the sha256), X-Repo-Commit, Content-Length
- GET  /{repo}/resolve/{revision}/{file}   the bytes; Range: bytes=N- gives 206

`cut_after[file] = N` makes the first GET of that file send N bytes of the body and then drop
the connection; `chunk_delay` slows every transfer so runs overlap; `hold[file]` makes a GET of
that file wait until the event is set. The hub's refusals: `gated` repositories answer 403
GatedRepo on resolve, `missing` files are listed but answer 404 EntryNotFound, `fail_with` answers
every request with that HTTP status. `claimed_sha256[file]` makes the hub state another sha256
(ETag and tree LFS oid) than the bytes have; files in `sha1_etag` get a git-blob ETag as files
outside LFS do, so only the tree carries their sha256. Every request is recorded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)/?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
CHUNK = 64 * 1024


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None
    query: str = ""


@dataclass
class FakeHub:
    repos: dict[str, dict[str, bytes]]
    required_token: str | None = None
    cut_after: dict[str, int] = field(default_factory=dict)
    chunk_delay: float = 0.0
    hold: dict[str, threading.Event] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    missing: set[str] = field(default_factory=set)
    fail_with: int | None = None
    claimed_sha256: dict[str, str] = field(default_factory=dict)
    sha1_etag: set[str] = field(default_factory=set)
    requests: list[Request] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def gets(self, filename: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + filename)]

    def sha256(self, name: str, data: bytes) -> str:
        """The sha256 the hub states for a file: its own, unless `claimed_sha256` says otherwise."""
        return self.claimed_sha256.get(name) or hashlib.sha256(data).hexdigest()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            if body and self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            self._send(
                status,
                {
                    "Content-Type": "application/json",
                    "X-Error-Code": code,
                    "X-Error-Message": message,
                    "Content-Length": str(len(body)),
                    "X-Repo-Commit": COMMIT,
                },
                body,
            )

        def _authorized(self) -> bool:
            if hub.required_token is None:
                return True
            if self.headers.get("Authorization") == f"Bearer {hub.required_token}":
                return True
            self._error(401, "RepoNotFound", "Repository not found or authentication required")
            return False

        def do_HEAD(self) -> None:
            self._serve()

        def do_GET(self) -> None:
            self._serve()

        def _serve(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            with hub._lock:
                hub.requests.append(
                    Request(
                        self.command,
                        path,
                        self.headers.get("Range"),
                        self.headers.get("Authorization"),
                        url.query,
                    )
                )
            if hub.fail_with is not None:
                return self._error(hub.fail_with, "", f"the hub answers {hub.fail_with}")
            if not self._authorized():
                return
            if m := _TREE.match(path):
                return self._tree(m["repo"], m["rev"])
            if m := _RESOLVE.match(path):
                return self._file(m["repo"], m["rev"], m["file"])
            self._error(404, "NotFound", f"no route {path}")

        def _tree(self, repo: str, rev: str) -> None:
            files = hub.repos.get(repo)
            if files is None:
                return self._error(404, "RepoNotFound", f"Repository {repo} not found")
            if rev not in ("main", COMMIT):
                return self._error(404, "RevisionNotFound", f"Revision {rev} not found")
            entries = [
                {
                    "type": "file",
                    "path": name,
                    "size": len(data),
                    "oid": hashlib.sha1(data).hexdigest(),
                    "lfs": {
                        "oid": hub.sha256(name, data),
                        "size": len(data),
                        "pointerSize": 134,
                    },
                }
                for name, data in sorted(files.items())
            ]
            body = json.dumps(entries).encode()
            self._send(
                200, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body
            )

        def _file(self, repo: str, rev: str, name: str) -> None:
            files = hub.repos.get(repo)
            if files is None:
                return self._error(404, "RepoNotFound", f"Repository {repo} not found")
            if rev not in ("main", COMMIT):
                return self._error(404, "RevisionNotFound", f"Revision {rev} not found")
            if repo in hub.gated:
                return self._error(403, "GatedRepo", f"Access to {repo} is restricted")
            data = files.get(name)
            if data is None or name in hub.missing:
                return self._error(404, "EntryNotFound", f"{name} not found")
            start = 0
            status = 200
            etag = (
                hashlib.sha1(data).hexdigest() if name in hub.sha1_etag else hub.sha256(name, data)
            )
            headers = {
                "ETag": f'"{etag}"',
                "X-Repo-Commit": COMMIT,
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            if (rng := self.headers.get("Range")) and self.command == "GET":
                m = re.match(r"bytes=(\d+)-$", rng)
                if m:
                    start = int(m[1])
                    status = 206
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            headers["Content-Length"] = str(len(data) - start)
            if self.command == "GET" and (gate := hub.hold.get(name)) is not None:
                gate.wait()
            self._send(status, headers)
            if self.command == "HEAD":
                return
            cut = None
            with hub._lock:
                if name in hub.cut_after:
                    cut = hub.cut_after.pop(name)
            body = data[start:]
            sent = 0
            while sent < len(body):
                piece = body[sent : sent + CHUNK]
                if cut is not None and sent + len(piece) > cut:
                    piece = piece[: cut - sent]
                self.wfile.write(piece)
                self.wfile.flush()
                sent += len(piece)
                if cut is not None and sent >= cut:
                    # Drop the connection half way: the client sees a short body.
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if hub.chunk_delay:
                    threading.Event().wait(hub.chunk_delay)

    return Handler


@contextlib.contextmanager
def serve(hub: FakeHub) -> Iterator[FakeHub]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        for gate in hub.hold.values():
            gate.set()  # no request waits for ever
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def files_from(paths: dict[str, Path]) -> dict[str, bytes]:
    return {name: p.read_bytes() for name, p in paths.items()}
