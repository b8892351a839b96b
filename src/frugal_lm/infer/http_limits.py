"""What one HTTP client may make `frugal serve` hold: body size, time to send a request, connections.

Design choices:
- Every resource a client controls is bounded before the app sees it: the body by
  `BodyLimit` (Content-Length is checked before reading, and the bytes actually received are
  counted while reading, so a chunked or lying body is cut off too), the time to send the
  request head by `head_timeout_protocol` and the time to send the body by `BodyLimit`,
  the header size by h11's incomplete-event limit, and the number of open connections by
  uvicorn's `limit_concurrency` (beyond it uvicorn answers 503 at once).
- uvicorn has no timeout for a request head: a client sending its headers a byte at a time
  holds a connection forever (slowloris). `head_timeout_protocol` subclasses uvicorn's h11
  protocol (the pure-Python one, so the header-size limit applies too) and closes a
  connection whose head has not fully arrived within the timeout, counted from the
  connection's opening or from the end of its previous response.
- Rejections use OpenAI's error shape via the app's HTTPException handler: 413
  `request_too_large`, 408 `request_timeout`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from starlette.exceptions import HTTPException as StarletteHTTPException


@dataclass(frozen=True)
class HttpLimits:
    """`frugal serve`'s per-client limits; the defaults are the CLI's defaults."""

    max_body_bytes: int = 2 * 1024 * 1024  # a prompt that fits a 32k context is far below this
    request_timeout_s: float = 30.0  # to send the request head, and again to send the body
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    max_header_bytes: int = 16 * 1024  # h11's default, stated so that it is a visible choice
    max_connections: int = 256  # open connections (and running requests) at once


class RequestRejected(StarletteHTTPException):
    """Raised from the body reader: FastAPI re-raises HTTPExceptions met while reading the body
    (any other exception would become a generic 400), so the app's handler answers it."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(status, message)
        self.code = code


class BodyLimit:
    """ASGI middleware bounding a request body's size and the time it takes to arrive."""

    def __init__(self, app, max_bytes: int, timeout_s: float):
        self.app, self.max_bytes, self.timeout_s = app, max_bytes, timeout_s

    def _too_large(self) -> RequestRejected:
        return RequestRejected(
            413,
            f"the request body is larger than this server's limit of "
            f"{self.max_bytes:,} bytes (frugal serve --max-body-bytes)",
            "request_too_large",
        )

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await _reject(self._too_large(), send)
            return
        deadline = time.monotonic() + self.timeout_s
        received, complete, started = 0, False, False

        async def limited_receive():
            nonlocal received, complete
            if complete:  # the body is in: later receives only wait for a disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.0))
            except TimeoutError:
                raise RequestRejected(
                    408,
                    f"the request body did not arrive within {self.timeout_s:g} s (frugal serve --request-timeout)",
                    "request_timeout",
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise self._too_large()
            else:
                complete = True
            return message

        async def tracked_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except RequestRejected as error:  # raised outside a route (no handler saw it)
            if started:
                raise
            await _reject(error, send)


async def _reject(error: RequestRejected, send) -> None:
    body = json.dumps(
        {"error": {"message": error.detail, "type": "invalid_request_error", "param": None, "code": error.code}}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": error.status_code,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def head_timeout_protocol(timeout_s: float):
    """uvicorn's h11 protocol class, closing a connection whose request head takes longer than `timeout_s`."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            cycle = self.cycle
            super().handle_events()
            if self.cycle is not cycle:  # a whole request head arrived
                self._disarm()

        def on_response_complete(self) -> None:
            if not self.transport.is_closing():
                self._arm()  # the next request's head, on this keep-alive connection
            super().on_response_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._head_timer = self.loop.call_later(timeout_s, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutH11Protocol
