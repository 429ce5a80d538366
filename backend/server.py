"""The HTTP server around the app: uvicorn with a deadline per request and a cap on connections.

uvicorn 0.55 times out only idle keep-alive connections: a client that sends its request head or body
a byte at a time, or nothing at all, is kept for as long as it likes (2,000 such connections held for
60 s were all kept). Here every request must have arrived completely within ``REQUEST_TIMEOUT``
seconds of the connection opening (or of the previous response), or the connection is closed; and at
most ``MAX_CONNECTIONS`` connections are served at once (uvicorn answers the next ones 503), well below
the process's file descriptor limit. The h11 protocol is the one uvicorn picks when ``httptools`` is not
installed; naming it keeps the deadline hook on the parser actually in use.
"""

from __future__ import annotations

import asyncio

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from backend.settings import Settings


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request is still incomplete at the deadline."""

    request_timeout: float  # seconds; server_config sets it from REQUEST_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # a kept-alive connection: the next request gets the same time

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _expire(self) -> None:
        # IDLE: the request head is not complete; SEND_BODY: the body is not. DONE: the app is answering,
        # which takes as long as it takes (predictions are bounded by PREDICT_QUEUE, not by this deadline).
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.logger.info("closing a connection whose request did not arrive within %g s", self.request_timeout)
            self.transport.close()


def server_config(app: object, settings: Settings, host: str, port: int, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn configuration ``python -m backend`` serves with (tests serve the app with it too)."""

    class Protocol(DeadlineH11Protocol):
        request_timeout = settings.request_timeout

    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        log_level=log_level,
        http=Protocol,
        limit_concurrency=settings.max_connections,
    )
