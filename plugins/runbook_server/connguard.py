"""Read timeouts and a connection cap for the HTTP server (uvicorn's h11 protocol, guarded).

uvicorn times out idle keep-alive connections, but not a client that sends half a request and waits: each such
connection is held for good, and a thousand of them exhaust the server. :func:`guarded_protocol` returns
uvicorn's h11 protocol with

- a *header timeout*: a connection must deliver a request's headers within ``header_timeout`` seconds of
  connecting (or of starting its next request on a kept-alive connection);
- a *body timeout*: the whole body must arrive within ``body_timeout`` seconds after the headers;
- a *connection cap*: past ``max_connections`` open connections, a new one is closed at once, unanswered.

A connection that misses a deadline is closed without a response (it never sent a whole request). Requests
the application is answering (a long ``wait``, an event stream) are not affected: their client is done sending.
"""

from __future__ import annotations

import asyncio

__all__ = ["guarded_protocol", "raise_open_files_limit"]


def guarded_protocol(header_timeout: float, body_timeout: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol class with read deadlines and a cap on open connections (pass as ``Config(http=...)``)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        """H11Protocol that drops clients too slow to send a request, and connections past the cap."""

        _timer: asyncio.TimerHandle | None = None
        _reading: str = ""  # "headers" or "body" while a deadline runs

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if len(self.connections) >= max_connections:
                transport.abort()
                return
            super().connection_made(transport)
            self._arm("headers", header_timeout)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if getattr(self, "transport", None) is None:
                return  # refused in connection_made: nothing was set up
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        def _follow(self) -> None:
            """Arm or stop the deadline for what the client is sending now."""
            state = self.conn.their_state
            if state is h11.SEND_BODY:
                if self._reading != "body":
                    self._arm("body", body_timeout)
            elif state is h11.IDLE and self.conn.trailing_data[0]:
                if self._reading != "headers":  # the next request has begun on a kept-alive connection
                    self._arm("headers", header_timeout)
            else:
                self._disarm()  # the request is complete (or the connection idles under uvicorn's keep-alive timeout)

        def _arm(self, what: str, seconds: float) -> None:
            self._disarm()
            self._reading = what
            self._timer = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._reading = None, ""

        def _expired(self) -> None:
            self._timer = None
            if self._reading and not self.transport.is_closing():
                self.logger.debug("closing a connection that did not send its request %s in time", self._reading)
                self.transport.abort()

    return GuardedH11Protocol


def raise_open_files_limit(wanted: int) -> None:
    """Raise this process's soft limit of open files towards ``wanted`` (never above the hard limit)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
