"""A stand-in for the Hugging Face Hub's HTTP API on 127.0.0.1, for tests that run the real huggingface_hub client
(HF_ENDPOINT points at it) without the network: it answers the calls the push path makes with the status codes
and headers the Hub uses, and records every request."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class FakeHub:
    url: str = ""
    # whoami-v2: the account behind the token; a status other than 200 answers that instead
    whoami: dict = field(
        default_factory=lambda: {"name": "someone", "orgs": [], "auth": {"accessToken": {"role": "write"}}}
    )
    whoami_status: int = 200
    auth_check_status: int = 404  # 404 + RepoNotFound: the repo does not exist yet
    create_repo_status: int = 500  # the upload's first call: a 500 makes it fail like a Hub outage
    requests: list[tuple[str, str]] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)  # each request's Authorization header (None without one)


def reply(handler: BaseHTTPRequestHandler, status: int, body: dict, headers: dict | None = None) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


@contextmanager
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep the test output clean
            pass

        def answer(self) -> None:
            hub.requests.append((self.command, self.path))
            hub.tokens.append(self.headers.get("Authorization"))
            if self.headers.get("Content-Length"):
                self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.startswith("/api/whoami-v2"):
                if hub.whoami_status == 200:
                    reply(self, 200, hub.whoami)
                else:
                    reply(self, hub.whoami_status, {"error": "Invalid credentials in Authorization header"})
            elif "/auth-check" in self.path:
                code = {"X-Error-Code": "RepoNotFound"} if hub.auth_check_status == 404 else {}
                reply(
                    self, hub.auth_check_status, {"error": "auth check"} if hub.auth_check_status != 200 else {}, code
                )
            elif self.path.startswith("/api/repos/create"):
                reply(self, hub.create_repo_status, {"error": "Internal Error - We're working hard to fix this"})
            else:
                reply(self, 500, {"error": f"the fake Hub does not answer {self.command} {self.path}"})

        do_GET = do_POST = do_PUT = answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
