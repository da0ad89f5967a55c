"""The request and upload limits of `python app.py`, against a real server in a subprocess (its own Gradio cache).

Every request body is counted as it arrives and refused as soon as it passes its cap, on every route: a 200 MiB body
streamed to the server (by a generator: the test never holds it) is answered 413 and leaves the server's memory
as it was. Files are taken only by the upload route, a few at a time, at a bounded rate per client address, and an
upload of a digit still works.
"""

from __future__ import annotations

import io
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from test_app import free_port
from test_robustness_app import wait_for_server

from vae import request_limits

pytestmark = pytest.mark.slow  # each test talks to a `python app.py` of its own module's

ROOT = Path(__file__).resolve().parent.parent
HUGE = 200 * 2**20  # the body an attacker streams
CHUNK = 2**20
MAX_RSS_GROWTH = 50 * 2**20  # what one refused body may add to the server's memory, at most


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[tuple[str, subprocess.Popen]]:
    folder = tmp_path_factory.mktemp("limited-server")
    port = free_port()
    env = {
        **os.environ,
        "GRADIO_TEMP_DIR": str(folder / "gradio"),
        "PYTHONUNBUFFERED": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    with open(folder / "server.log", "w") as out:
        process = subprocess.Popen(
            [sys.executable, "app.py", "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_server(base, process, folder / "server.log")
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def stream_post(base: str, path: str, content_type: str, total: int, declare: bool) -> tuple[int, str, int]:
    """POST `total` bytes to `path`, a chunk at a time (chunked, or with its Content-Length declared), stopping as soon
    as the server answers or closes. → the status, the answer's text and the bytes sent."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    framing = f"Content-Length: {total}" if declare else "Transfer-Encoding: chunked"
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n{framing}\r\n\r\n"
    sock.sendall(head.encode())
    sent, answer = 0, b""
    part = b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n'
    try:
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered: stop sending
            chunk = (part if sent == 0 else b"") + b"0" * (CHUNK - (len(part) if sent == 0 else 0))  # one file's part
            data = chunk if declare else b"%x\r\n%s\r\n" % (len(chunk), chunk)
            sock.sendall(data)
            sent += len(chunk)
        else:
            if not declare:
                sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused and closed: the answer may still be waiting to be read
    try:
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < 10:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1") else 0
    return status, answer.split(b"\r\n\r\n", 1)[-1].decode(errors="replace"), sent


@pytest.mark.parametrize("declare", [True, False], ids=["declared", "chunked"])
@pytest.mark.parametrize("route", ["/gradio_api/queue/join", "/gradio_api/upload"])
def test_a_huge_multipart_body_is_refused_before_it_is_read(server, route, declare):
    base, process = server
    rss = psutil.Process(process.pid).memory_info().rss
    began = time.monotonic()
    status, text, sent = stream_post(base, route, "multipart/form-data; boundary=x", HUGE, declare)
    grown = psutil.Process(process.pid).memory_info().rss - rss
    print(
        f"\n{route} {'declared' if declare else 'chunked'}: {status} after {sent / 2**20:.0f} MiB sent, "
        f"{time.monotonic() - began:.1f} s; server RSS grew by {grown / 2**20:.1f} MB"
    )
    assert status == 413, text[:300]
    assert sent < 16 * 2**20, "refused while the body was still arriving"
    assert grown < MAX_RSS_GROWTH
    assert "kB" in text or "only by" in text


def test_json_over_the_limit_is_refused_while_it_streams(server):
    base, _ = server
    status, text, sent = stream_post(base, "/gradio_api/queue/join", "application/json", HUGE, declare=False)
    assert status == 413 and sent < 16 * 2**20, text[:300]


def digit_png() -> bytes:
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 12:16] = 255  # a 1
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_digit_upload_still_works(server, tmp_path):
    base, _ = server
    path = tmp_path / "one.png"
    path.write_bytes(digit_png())
    client = Client(base, verbose=False, download_files=str(tmp_path / "downloads"))
    model_input, *_ = client.predict(handle_file(str(path)), "7", "vae-mnist", api_name="/encode")
    assert Path(model_input).is_file()


def upload(base: str, files: int, size: int = 1000) -> httpx.Response:
    parts = [("files", (f"d{i}.png", b"\x89PNG" + b"0" * size)) for i in range(files)]
    return httpx.post(f"{base}{request_limits.UPLOAD_ROUTE}", files=parts, timeout=60)


def test_uploads_are_limited_in_files_and_bytes(server):
    base, _ = server
    assert upload(base, request_limits.MAX_UPLOAD_FILES).status_code == 200
    too_many = upload(base, request_limits.MAX_UPLOAD_FILES + 1)
    assert too_many.status_code == 413 and "Too many files" in too_many.text
    too_big = upload(base, 1, request_limits.MAX_UPLOAD_BYTES)
    assert too_big.status_code == 413 and "too large" in too_big.text


def test_uploads_are_limited_in_rate_per_address(server):
    """Past the burst, an address gets 429 with the wait; the tests before used a few of its uploads."""
    base, _ = server
    answers = [upload(base, 1) for _ in range(request_limits.UPLOAD_BURST + 1)]
    refused = [a for a in answers if a.status_code == 429]
    assert refused, [a.status_code for a in answers]
    assert all(a.status_code == 200 for a in answers[: answers.index(refused[0])])
    assert "Too many uploads" in refused[0].text and "try again in" in refused[0].text
