"""busd: Python agents on the busd message bus (ctypes over the C ABI, libbus_c).

    import busd
    with busd.Client("planner") as c:
        reply = c.request("svc.plan", b"data", timeout=0.005)

        @c.subscribe("jobs.>")
        def on_job(msg: busd.Message) -> None:
            print(msg.subject, msg.payload)

        c.run()
"""
from .aio import AsyncClient, AsyncSubscription
from .client import AgentInfo, Client, Message, PendingReply, Subscription, version
from .errors import (AlreadyExists, BadMessage, BusError, Cancelled, ClosedError, Corrupt, InternalError,
                     InvalidArgument, LimitReached, NoRespondersError, NotFound, PermissionDenied,
                     ShuttingDown, SystemError, TimeoutError, TooLarge, Unsupported, VersionMismatch,
                     WouldBlock)

__version__ = "0.1.0"
__all__ = [
    "AsyncClient", "AsyncSubscription", "AgentInfo", "Client", "Message", "PendingReply", "Subscription",
    "version", "AlreadyExists", "BadMessage", "BusError", "Cancelled", "ClosedError", "Corrupt",
    "InternalError", "InvalidArgument", "LimitReached", "NoRespondersError", "NotFound", "PermissionDenied",
    "ShuttingDown", "SystemError", "TimeoutError", "TooLarge", "Unsupported", "VersionMismatch", "WouldBlock",
]
