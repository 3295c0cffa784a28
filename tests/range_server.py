"""A real HTTP server on 127.0.0.1 that answers Range requests, for the remote-recording tests and
benchmarks/remote_reader.py. python's SimpleHTTPRequestHandler ignores Range, hence this handler.

    with RangeServer(directory) as server:
        url = server.url("lorenz_small.nwb")      # http://127.0.0.1:PORT/lorenz_small.nwb
        ...
        server.log                                # [(method, path, range header or None, bytes sent)]

`server.mode` makes it misbehave on purpose: 'ok', 'no-range' (200 and the whole body, as a server
without range support), 'truncate' (announces the full length, sends half, closes), 'status:N' (every
request answered with status N), 'fail-get:N' (HEAD answered, every GET
answered with status N: a failure after the file was opened), 'no-head' (405 for HEAD, as some object
stores answer a URL signed for GET), 'die-after:K' (answers the first K requests since it started, HEAD
or GET, then dies: later requests are closed unanswered and new connections refused), 'hang-after:K'
(answers the first K requests, then accepts GETs and never answers them until the server stops).
`server.etags` overrides a file's ETag (a changed file on the server).
"""

from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_HEAD(self):
        if not self.server.owner.admit():
            return
        if self.server.owner.mode == "no-head":
            self._record(None, 0)
            self.send_response(405)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._answer(body=False)

    def do_GET(self):
        owner = self.server.owner
        if owner.admit():
            if owner.mode.startswith("hang-after:") and owner.admitted > int(owner.mode.split(":")[1]):
                owner.stopped.wait(60)  # a server that stopped answering: the connection stays open, silent
                return
            self._answer(body=True)

    def _answer(self, body: bool) -> None:
        owner = self.server.owner
        path = owner.directory / self.path.lstrip("/").split("?")[0]
        mode = owner.mode
        header = self.headers.get("Range")
        failing = mode.startswith("status:") or (mode.startswith("fail-get:") and body)
        if failing or not path.is_file():
            status = int(mode.split(":")[1]) if failing else 404
            self._record(header, 0)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = path.read_bytes()
        etag = owner.etags.get(path.name) or '"' + hashlib.md5(data).hexdigest() + '"'
        match = _RANGE.match(header or "") if mode != "no-range" else None
        start, end = (int(match[1]), min(int(match[2] or len(data) - 1), len(data) - 1)) if match else (0, len(data) - 1)
        part = data[start:end + 1]
        self.send_response(206 if match else 200)
        self.send_header("Content-Length", str(len(part)))
        self.send_header("ETag", etag)
        if mode != "no-range":
            self.send_header("Accept-Ranges", "bytes")
        if match:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        sent = 0
        if body:
            sent = len(part) // 2 if mode == "truncate" else len(part)
            try:
                self.wfile.write(part[:sent])
            except (BrokenPipeError, ConnectionResetError):  # the client closed early (e.g. a probe)
                pass
            if mode == "truncate":
                self.close_connection = True
        self._record(header, sent)

    def _record(self, header, sent: int) -> None:
        with self.server.owner.lock:
            self.server.owner.log.append((self.command, self.path, header, sent))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "RangeServer"


class RangeServer:
    """Serve `directory` on 127.0.0.1 (an ephemeral port) from a background thread until closed."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.mode = "ok"
        self.etags: dict[str, str] = {}
        self.log: list[tuple[str, str, str | None, int]] = []
        self.admitted = 0  # requests received
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def bytes_sent(self) -> int:
        return sum(entry[3] for entry in self.log)

    def data_requests(self) -> list:
        """GET requests (HEAD only validates)."""
        return [entry for entry in self.log if entry[0] == "GET"]

    @property
    def dying(self) -> int:
        """K of 'die-after:K', else 0."""
        return int(self.mode.split(":")[1]) if self.mode.startswith("die-after:") else 0

    def admit(self) -> bool:
        """Whether to answer a request (its connection is closed unanswered otherwise). A 'die-after:K'
        server stops listening before its K-th answer, so that any later connection is refused."""
        with self.lock:
            self.admitted += 1
            n = self.admitted
        if n == self.dying:
            self.stop()  # a handler runs in a thread of its own: shutdown() can wait for serve_forever
        return not self.dying or n <= self.dying

    def stop(self) -> None:
        self.stopped.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "RangeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
