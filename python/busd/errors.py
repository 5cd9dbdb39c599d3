"""Exceptions mapped from the C ABI's bus_status codes (bus/bus.h, schemas/errors.fbs)."""
from __future__ import annotations

import builtins
from typing import Dict, Type


class BusError(Exception):
    """A failed bus call. `code` is the bus_status number, `status` its name ("Timeout")."""

    code: int = -1
    status: str = "Unknown"

    def __init__(self, message: str = "", code: int = -1, status: str = "Unknown") -> None:
        super().__init__(message or status)
        if code != -1:
            self.code = code
        if status != "Unknown":
            self.status = status


def _define(name: str, code: int, status: str, *bases: type) -> Type[BusError]:
    cls = type(name, (BusError,) + bases, {"code": code, "status": status, "__module__": "busd"})
    return cls  # type: ignore[return-value]


WouldBlock = _define("WouldBlock", 1, "WouldBlock", builtins.BlockingIOError)
TimeoutError = _define("TimeoutError", 2, "Timeout", builtins.TimeoutError)  # noqa: A001
TooLarge = _define("TooLarge", 3, "TooLarge", builtins.ValueError)
Corrupt = _define("Corrupt", 4, "Corrupt")
BadMessage = _define("BadMessage", 5, "BadMessage")
VersionMismatch = _define("VersionMismatch", 6, "VersionMismatch")
NotFound = _define("NotFound", 7, "NotFound", builtins.LookupError)
NoRespondersError = _define("NoRespondersError", 8, "NoResponders")
PermissionDenied = _define("PermissionDenied", 9, "PermissionDenied", builtins.PermissionError)
ClosedError = _define("ClosedError", 10, "Closed", builtins.ConnectionError)
InvalidArgument = _define("InvalidArgument", 11, "InvalidArgument", builtins.ValueError)
SystemError = _define("SystemError", 12, "System", builtins.OSError)  # noqa: A001
Unsupported = _define("Unsupported", 13, "Unsupported")
AlreadyExists = _define("AlreadyExists", 14, "AlreadyExists")
LimitReached = _define("LimitReached", 15, "LimitReached")
ShuttingDown = _define("ShuttingDown", 16, "ShuttingDown")
Cancelled = _define("Cancelled", 17, "Cancelled")
InternalError = _define("InternalError", 1000, "Internal")

BY_CODE: Dict[int, Type[BusError]] = {
    c.code: c for c in (WouldBlock, TimeoutError, TooLarge, Corrupt, BadMessage, VersionMismatch, NotFound,
                        NoRespondersError, PermissionDenied, ClosedError, InvalidArgument, SystemError,
                        Unsupported, AlreadyExists, LimitReached, ShuttingDown, Cancelled, InternalError)
}
BY_STATUS: Dict[str, int] = {c.status: c.code for c in BY_CODE.values()}


def from_code(code: int, message: str) -> BusError:
    cls = BY_CODE.get(code)
    if cls is None:
        return BusError(message, code, "Unknown")
    return cls(message)
