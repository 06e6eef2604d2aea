"""The HTTP/1.1 connection as the service runs it: uvicorn's h11 protocol with the limits an exposed
edge box needs and uvicorn does not give.

- A connection cap: beyond `max_connections` a new connection gets one 503 JSON line and is closed, so
  a flood of idle sockets cannot use up the process's open files (uvicorn would accept them all).
- A header deadline: a request's line and headers must arrive within `client_timeout` seconds of the
  first byte (or of the connection), so silent and half-sent connections are closed (slowloris).
- A bound on discarding: after an early answer (503, 401...) the rest of a body is read and dropped,
  never held, but at most `max_upload` bytes and for at most `DISCARD_SECONDS`.
- A graceful drain: on SIGTERM every answer says `Connection: close` and an idle kept-alive connection
  is kept for `DRAIN_SECONDS`, so that a request already on its way is answered instead of reset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.flow_control import CLOSE_HEADER as CLOSE
from uvicorn.protocols.http.h11_impl import H11Protocol

DRAIN_SECONDS = 1.0
DISCARD_SECONDS = 60.0
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s")


class Guard:
    """The limits and the refusal counter the protocol reports to (one per service)."""

    def __init__(self, max_connections: int, client_timeout: float, max_upload: int,
                 refused: Callable[[str], None]) -> None:
        self.max_connections, self.client_timeout, self.max_upload = max_connections, client_timeout, max_upload
        self.refused = refused
        self.open = 0  # connections held now


def protocol_class(guard: Guard) -> type[H11Protocol]:
    """An H11Protocol subclass bound to `guard` (uvicorn builds one protocol object per connection)."""

    class GuardedH11(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.counted = False
            self.header_timer: asyncio.TimerHandle | None = None
            self.discard_timer: asyncio.TimerHandle | None = None
            self.discarded = 0
            self.draining = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            if guard.open >= guard.max_connections:
                guard.refused("connections")
                body = (b'{"error": "busy: the service holds its limit of %d connections '
                        b'(--max-connections); retry shortly"}' % guard.max_connections)
                transport.write(BUSY % (len(body), body))
                transport.close()
                self.transport = transport
                return
            guard.open += 1
            self.counted = True
            super().connection_made(transport)
            self._arm_header_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.counted:
                return
            self.counted = False
            guard.open -= 1
            self._cancel_timers()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self.counted:
                return
            if self.conn.our_state is h11.DONE and self.conn.their_state is h11.SEND_BODY:
                self._discarding(len(data))
            super().data_received(data)
            if self.transport.is_closing():
                return
            if self.conn.their_state is h11.IDLE:
                self._arm_header_timer()  # a new request has started arriving: its headers have a deadline
            elif self.header_timer is not None:
                self.header_timer.cancel()
                self.header_timer = None
            if self.draining:
                self._close_after_this_request()

        def _arm_header_timer(self) -> None:
            if self.header_timer is None:
                self.header_timer = self.loop.call_later(guard.client_timeout, self._header_timeout)

        def _header_timeout(self) -> None:
            self.header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing() and \
                    (self.cycle is None or self.cycle.response_complete):
                guard.refused("header timeout")
                self.transport.close()

        def _discarding(self, size: int) -> None:
            self.discarded += size
            if self.discarded > guard.max_upload:
                self.transport.close()
            elif self.discard_timer is None:
                self.discard_timer = self.loop.call_later(DISCARD_SECONDS, self.transport.close)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is not h11.SEND_BODY and self.discard_timer is not None:
                self.discard_timer.cancel()
                self.discard_timer = None

        def _cancel_timers(self) -> None:
            for timer in (self.header_timer, self.discard_timer):
                if timer is not None:
                    timer.cancel()
            self.header_timer = self.discard_timer = None

        def shutdown(self) -> None:
            """SIGTERM: every request from now on is answered with `Connection: close`, and the connection
            closes once idle, but not before DRAIN_SECONDS: a request already on its way over a kept-alive
            connection is answered, not reset (uvicorn closes idle connections at once, and a busy one right
            after its answer without saying so, so the client's next request meets a closed socket)."""
            if not self.counted:
                return
            self.draining = True
            self._close_after_this_request()
            self.loop.call_later(DRAIN_SECONDS, self._close_when_idle)

        def _close_after_this_request(self) -> None:
            cycle = self.cycle
            if cycle is not None and not cycle.response_started and CLOSE not in cycle.scope["headers"]:
                cycle.scope["headers"].append(CLOSE)  # uvicorn then answers with Connection: close

        def _close_when_idle(self) -> None:
            if self.transport.is_closing():
                return
            if (self.cycle is None or self.cycle.response_complete) and self.conn.their_state is not h11.SEND_BODY:
                super().shutdown()
            else:  # an answer is on its way; it says Connection: close, or the next one will
                self.loop.call_later(0.1, self._close_when_idle)

    return GuardedH11
