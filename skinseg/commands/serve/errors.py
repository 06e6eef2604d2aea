"""How the service refuses: one exception that becomes one JSON line with its status (the error map)."""

from __future__ import annotations


class Refused(Exception):
    """A request answered with an error status and one line.

    reason: the label `skinseg_refusals_total` counts it under; close: end the connection after the answer
    (the request's body was not read to its end and is not worth reading).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, *, reason: str = "",
                 close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})
        self.reason = reason or str(status)
        if close:
            self.headers["Connection"] = "close"


class ClientGone(Exception):
    """The client closed the connection before its upload ended: nothing to answer."""
