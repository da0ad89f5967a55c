"""The server's request limits, made only by `python app.py`: an ASGI middleware that counts every request body as it
arrives (RequestLimit), each client's upload rate (UploadRate) and the bytes of uploads kept (UploadLedger)."""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict, deque

from vae.disk import DISK, DiskBudget
from vae.visitors import client_address

# What the server holds at once.
CONCURRENCY = 2  # requests computed at once, over all events: one per core of a small Space
MAX_REQUEST_BYTES = 64 * 1024  # a request body other than an upload (the page's calls send under 2 kB)
UPLOAD_ROUTE = "/gradio_api/upload"  # the one route that takes files (multipart bodies)
MAX_UPLOAD_BYTES = 2 * 2**20  # an upload request's body: a drawing or a photo of a digit is well under 1 MB
MAX_UPLOAD_FILES = 4  # files in one upload request (the page sends one or a sketchpad's few layers)
UPLOAD_BURST, UPLOADS_PER_MINUTE = 30, 30  # upload requests per client address: at once, then a minute
RATE_ADDRESSES = 10_000  # client addresses whose upload rate is remembered
UPLOAD_AGE = 600  # seconds an upload is kept (Gradio's delete_cache, checked every UPLOAD_SWEEP seconds)
UPLOAD_SWEEP = 60
UPLOAD_BYTES = 256 * 2**20  # upload bodies received in the last UPLOAD_AGE + UPLOAD_SWEEP seconds, from everyone


class TooLarge(Exception):
    """Raised into the app by RequestLimit's receive once a body passed its cap: the app stops reading it."""


class UploadRate:
    """A token bucket per client address: UPLOAD_BURST uploads at once, then UPLOADS_PER_MINUTE. At most
    RATE_ADDRESSES addresses are remembered (the least recently seen forgotten: a full bucket again)."""

    def __init__(self, burst: int = UPLOAD_BURST, per_minute: float = UPLOADS_PER_MINUTE):
        self.burst, self.per_second = burst, per_minute / 60
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address → (tokens, when)
        self.lock = threading.Lock()

    def take(self, address: str) -> float:
        """One upload for `address`: 0 if allowed, else the seconds until the next one is."""
        now = time.monotonic()
        with self.lock:
            tokens, when = self.buckets.pop(address, (self.burst, now))
            tokens = min(self.burst, tokens + (now - when) * self.per_second)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.per_second
            self.buckets[address] = (tokens - 1 if tokens >= 1 else tokens, now)
            while len(self.buckets) > RATE_ADDRESSES:
                self.buckets.popitem(last=False)
        return wait


class UploadLedger:
    """The bytes of upload bodies received in the last UPLOAD_AGE + UPLOAD_SWEEP seconds: no upload is older than that
    (Gradio's delete_cache), so they bound what the uploads hold on disk without walking the upload folder. They count
    toward the server's disk budget, and UPLOAD_BYTES of it at most."""

    def __init__(self, budget: DiskBudget = DISK):
        self.received: deque[tuple[float, int]] = deque()  # (when, bytes), oldest first
        self.total = 0
        self.lock = threading.Lock()
        self.budget = budget
        budget.add(self)

    def disk_bytes(self) -> int:
        self.expire()
        return self.total

    def expire(self) -> None:
        cutoff = time.monotonic() - (UPLOAD_AGE + UPLOAD_SWEEP)
        with self.lock:
            while self.received and self.received[0][0] < cutoff:
                self.total -= self.received.popleft()[1]

    def refusal(self, size: int) -> str | None:
        """Why `size` more bytes may not be received now (the uploads' share or the disk budget is full), or None."""
        self.expire()
        if self.total + size > UPLOAD_BYTES:
            share = UPLOAD_BYTES // 2**20
            return f"This server holds as many uploads as it keeps ({share} MB): try again in {self.wait()} s."
        if self.budget.spare() < size:
            return (
                f"This server's disk holds as much as it keeps ({self.budget.limit // 2**20:,} MB for pictures, "
                "uploads and the models visitors trained): try again in a few minutes."
            )
        return None

    def add(self, size: int) -> None:
        with self.lock:
            self.received.append((time.monotonic(), size))
            self.total += size

    def wait(self) -> int:
        """Seconds until the oldest bytes counted leave the window."""
        with self.lock:
            oldest = self.received[0][0] if self.received else time.monotonic()
        return max(1, math.ceil(oldest + UPLOAD_AGE + UPLOAD_SWEEP - time.monotonic()))


class RequestLimit:
    """ASGI middleware for `python app.py`: every request body is counted as it arrives, and refused with 413 as soon
    as it passes its cap (or when its Content-Length says it will), before the app has read it whole:
    MAX_REQUEST_BYTES on every route but UPLOAD_ROUTE, where MAX_UPLOAD_BYTES and MAX_UPLOAD_FILES files a request,
    UPLOAD_BURST then UPLOADS_PER_MINUTE requests per client address, and UPLOAD_BYTES from everyone over the time
    an upload is kept (429 past those). A multipart body (files) is refused on any other route.

    Gradio's API takes JSON of any size, and keeps each session's last inputs in memory until app.SESSIONS newer
    sessions push them out (each raw API call is a session of its own): 25 calls with a 5 MB class name grew
    the server by 125 MB, for good. With the limit it keeps at most SESSIONS x 64 kB of inputs. Multipart bodies
    were let through whole to every route: one 200 MiB body to /gradio_api/queue/join grew the server by 830 MB,
    and the upload route took 1,000 files of 10 MB a request.
    """

    def __init__(
        self, app, limit: int = MAX_REQUEST_BYTES, upload_limit: int = MAX_UPLOAD_BYTES, budget: DiskBudget = DISK
    ):
        self.app, self.limit, self.upload_limit = app, limit, upload_limit
        self.rate = UploadRate()
        self.ledger = UploadLedger(budget)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        content_type = headers.get(b"content-type", b"").lower()
        upload = scope.get("path", "").rstrip("/") == UPLOAD_ROUTE
        limit = self.upload_limit if upload else self.limit
        what = f"at most {limit // 1024} kB a request"
        if upload:
            what += f" and {MAX_UPLOAD_FILES} files"
        if refused := self.refusal_at_start(scope, headers, upload, limit, what):
            return await self.refuse(send, *refused)
        boundary = re.search(rb"boundary=\"?([^\";]+)", content_type) if upload else None
        # Each part of a multipart body begins with this line; one more, the closing one, ends the body.
        delimiter = b"--" + boundary[1] if boundary else None
        state = {"bytes": 0, "parts": 0, "tail": b"", "started": False, "refused": False}

        async def counted():
            message = await receive()
            if message["type"] != "http.request" or state["refused"]:
                return message
            chunk = message.get("body", b"")
            state["bytes"] += len(chunk)
            problem, full = None, None
            if upload:
                self.ledger.add(len(chunk))  # counted as it arrives: a body refused later may have left a file
                full = self.ledger.refusal(0)
            if state["bytes"] > limit:
                problem = f"Request body too large: this route takes {what}."
            elif full:
                problem = full
            elif delimiter is not None:  # counted across chunk edges: the tail of the chunk before is searched too
                seen = state["tail"] + chunk
                state["parts"] += seen.count(delimiter)
                state["tail"] = seen[-(len(delimiter) - 1) :]
                if state["parts"] > MAX_UPLOAD_FILES + 1:
                    problem = f"Too many files: {UPLOAD_ROUTE} takes at most {MAX_UPLOAD_FILES} a request."
            if problem is None:
                return message
            state["refused"] = True
            if not state["started"]:
                await self.refuse(send, 429 if problem == full else 413, problem)
            raise TooLarge(problem)

        async def guarded(message):
            if state["refused"]:  # the app's own answer to the body it did not get: the 413 is sent already
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except TooLarge:
            pass

    def refusal_at_start(self, scope, headers: dict, upload: bool, limit: int, what: str) -> tuple[int, str] | None:
        """The status and message that refuse a request from its headers alone, before its body is read, or None."""
        if headers.get(b"content-type", b"").lower().startswith(b"multipart/") and not upload:
            return 413, f"Files are taken only by {UPLOAD_ROUTE}."
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            return 413, f"Request body too large: this route takes {what}."
        if upload and scope.get("method") == "POST":
            forwarded = {"x-forwarded-for": headers.get(b"x-forwarded-for", b"").decode("latin-1")}
            wait = self.rate.take(
                client_address(forwarded, (scope.get("client") or (None,))[0])
            )  # the Train tab's rule
            if wait:
                minute = f"{UPLOAD_BURST} at once, then {UPLOADS_PER_MINUTE} a minute"
                return 429, f"Too many uploads ({minute}): try again in {math.ceil(wait)} s."
            if full := self.ledger.refusal(int(length) if length is not None else 1):
                return 429, full
        return None

    async def refuse(self, send, status: int, message: str) -> None:
        text = message.encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(text)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": text})
