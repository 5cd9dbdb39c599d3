"""The synchronous client: busd.Client over the C ABI (libbus_c)."""
from __future__ import annotations

import ctypes
import struct
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, Union

from . import _lib
from .errors import BY_STATUS, BusError, TimeoutError, from_code

Payload = Union[bytes, bytearray, memoryview, str]
Handler = Callable[["Message"], Any]

_SLOW = {"block": 0, "drop-oldest": 1, "drop-newest": 2, "disconnect": 3}
STATES = {0: "connecting", 1: "connected", 2: "disconnected", 3: "closed"}


def _ns(seconds: Optional[float]) -> int:
    if seconds is None:
        return -1
    if seconds < 0:
        raise ValueError("timeout must be >= 0 (or None: no limit)")
    return int(seconds * 1e9)


def _buf(data: Payload) -> "tuple[Any, int]":
    """A pointer and length for payload bytes, without a copy for bytes/bytearray/memoryview."""
    if isinstance(data, str):
        data = data.encode()
    if isinstance(data, bytes):
        return data, len(data)  # c_void_p accepts bytes: a pointer to its buffer
    mv = memoryview(data)
    if not mv.contiguous:
        b = mv.tobytes()
        return b, len(b)
    if mv.readonly:
        b = mv.tobytes()
        return b, len(b)
    arr = (ctypes.c_char * mv.nbytes).from_buffer(mv)
    return arr, mv.nbytes


def _str(p: Optional[int], n: int) -> str:
    return ctypes.string_at(p, n).decode("utf-8", "replace") if p and n else ""


# Receiving builds a Message per message, so it reads the bus_message once (one struct unpack,
# not a ctypes attribute access per field) and copies through ctypes array types cached by
# length (a foreign call per copy, ctypes.string_at, costs more): 0.8 us instead of 1.2 us for a
# 64-byte message. The cache holds the lengths seen first (subjects and small payloads repeat);
# others go through string_at.
_RAW = struct.Struct("@PNPNPNQIIIIP")  # bus_message, as _lib.Message
assert _RAW.size == ctypes.sizeof(_lib.Message), "bus_message layout"
_ARRAYS: Dict[int, Any] = {}
_ARRAYS_MAX = 512


def _copy(p: int, n: int) -> bytes:
    t = _ARRAYS.get(n)
    if t is None:
        if len(_ARRAYS) >= _ARRAYS_MAX:
            return ctypes.string_at(p, n)
        t = _ARRAYS[n] = ctypes.c_char * n
    return t.from_address(p).raw


def _raise(code: int) -> None:
    L = _lib.lib()
    raise from_code(code, (L.bus_last_error_message() or b"").decode("utf-8", "replace"))


@dataclass
class AgentInfo:
    name: str
    agent_id: int
    pid: int
    uid: int
    capabilities: List[str] = field(default_factory=list)


class Message:
    """A received message. `payload` is bytes (a copy), or with zero_copy=True a memoryview of
    ring memory that is released when the handler returns (copy what must live longer)."""

    __slots__ = ("subject", "reply_to", "payload", "id", "sid", "source_id", "lane", "is_request",
                 "_client", "_raw")

    def __init__(self, client: Optional["Client"], raw: _lib.Message, zero_copy: bool = False) -> None:
        sp, sn, rp, rn, pp, pn, mid, sid, src, lane, flags, _ = _RAW.unpack_from(memoryview(raw))
        self.subject: str = _copy(sp, sn).decode("utf-8", "replace") if sp and sn else ""
        self.reply_to: str = _copy(rp, rn).decode("utf-8", "replace") if rp and rn else ""
        self.payload: Union[bytes, memoryview]
        if zero_copy and pn:
            self.payload = memoryview((ctypes.c_char * pn).from_address(pp)).cast("B")
        else:
            self.payload = _copy(pp, pn) if pp and pn else b""
        self.id: int = mid
        self.sid: int = sid
        self.source_id: int = src
        self.lane: int = lane
        self.is_request: bool = bool(flags & 1)
        self._client = client
        self._raw: Optional[ctypes._Pointer] = None  # the live bus_message during a callback

    @property
    def data(self) -> bytes:
        return bytes(self.payload)

    @property
    def text(self) -> str:
        return bytes(self.payload).decode("utf-8", "replace")

    def reply(self, data: Payload) -> None:
        """Answers this request (from its handler, or at any later time)."""
        if self._client is None:
            raise BusError("this message has no client to reply through")
        self._client.reply(self, data)

    def reply_error(self, error: Union[str, int, type], detail: str = "") -> None:
        if self._client is None:
            raise BusError("this message has no client to reply through")
        self._client.reply_error(self, error, detail)

    def __repr__(self) -> str:
        return f"Message(subject={self.subject!r}, payload={bytes(self.payload)[:32]!r}, id={self.id})"


class Subscription:
    """What Client.subscribe() returns. Use it as a decorator (`@c.subscribe("jobs.>")` then the
    function is called for each message from poll()/run()), or iterate it (`for msg in sub:`,
    polling the client), or call next(timeout). A context manager: unsubscribes on exit."""

    def __init__(self, client: "Client", pattern: str, queue: Optional[str], zero_copy: bool) -> None:
        self.client = client
        self.pattern = pattern
        self.queue_group = queue
        self.zero_copy = zero_copy
        self.handler: Optional[Handler] = None
        self.sid = 0
        self._pending: Deque[Message] = deque()

    def __call__(self, fn: Handler) -> Handler:
        self.handler = fn
        while self._pending:  # what came before the handler was attached
            fn(self._pending.popleft())
        return fn

    def next(self, timeout: Optional[float] = None) -> Message:
        """The next message (TimeoutError after `timeout` seconds; None: wait as long as it takes)."""
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._pending:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"Timeout: no message on {self.pattern}")
            self.client.poll(0.2 if left is None else min(left, 0.2))
        return self._pending.popleft()

    def __iter__(self) -> Iterator[Message]:
        while self.sid != 0:
            yield self.next()

    def unsubscribe(self) -> None:
        if self.sid != 0:
            sid, self.sid = self.sid, 0
            self.client._unsubscribe(sid)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()


class PendingReply:
    """A request sent with send_request(): result() polls the client until it is answered."""

    def __init__(self, client: "Client", callback: Optional[Callable[["PendingReply"], Any]]) -> None:
        self.client = client
        self.callback = callback
        self.id = 0
        self.reply: Optional[Message] = None
        self.error: Optional[BusError] = None
        self.done = False

    def result(self, timeout: Optional[float] = None) -> Message:
        import time
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("Timeout: no answer yet")
            self.client.poll(0.2 if left is None else min(left, 0.2))
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


class Client:
    """An agent on the bus: `with busd.Client("planner") as c: ...`.

    Like the C++ bus::Client it is used by one thread at a time; handlers run on the thread that
    calls poll(), run(), next() or request(). wake() and stop() may be called from any thread."""

    def __init__(self, name: str, *, address: Optional[str] = None, capabilities: Sequence[str] = (),
                 wait: Optional[str] = None, reconnect: bool = True, connect_timeout: float = 2.0,
                 control_timeout: float = 2.0, publish_timeout: float = 1.0, token: Optional[str] = None,
                 tls_ca: Optional[str] = None, tls_cert: Optional[str] = None, tls_key: Optional[str] = None,
                 tls_server_name: Optional[str] = None) -> None:
        self._L = _lib.lib()
        self._h: Optional[int] = None
        # wake() may come from another thread while this one closes: the handle is read and
        # freed under this lock (taken by wake() and close() only, never per message).
        self._close_lock = threading.Lock()
        self._subs: Dict[int, Subscription] = {}
        self._pending: Dict[int, PendingReply] = {}
        self._error: Optional[BaseException] = None  # raised by a handler: re-raised from poll()
        self._state_cb: Optional[Callable[[str, Optional[BusError]], Any]] = None
        self._stopped = False
        o = _lib.Options()
        self._L.bus_options_init(ctypes.byref(o))
        enc = lambda s: s.encode() if s is not None else None  # noqa: E731
        o.name = enc(name)
        caps = [c.encode() for c in capabilities]
        self._caps = (ctypes.c_char_p * max(1, len(caps)))(*caps)
        o.capabilities = self._caps
        o.capabilities_len = len(caps)
        o.address = enc(address)
        o.wait = enc(wait)
        o.token = enc(token)
        o.tls_ca, o.tls_cert, o.tls_key, o.tls_server_name = map(enc, (tls_ca, tls_cert, tls_key, tls_server_name))
        o.reconnect = 1 if reconnect else 0
        o.connect_timeout_ms = int(connect_timeout * 1000)
        o.control_timeout_ms = int(control_timeout * 1000)
        o.publish_timeout_ms = int(publish_timeout * 1000)
        h = ctypes.c_void_p()
        st = self._L.bus_connect(ctypes.byref(o), ctypes.byref(h))
        if st != 0:
            _raise(st)
        self._h = h.value
        # One trampoline per kind of callback, kept alive as long as the client.
        self._msg_fn = _lib.MESSAGE_FN(self._on_message)
        self._reply_fn = _lib.REPLY_FN(self._on_reply)
        self._state_fn = _lib.STATE_FN(self._on_state)
        self._L.bus_on_reply(self._h, self._reply_fn, None)
        self._L.bus_on_state_change(self._h, self._state_fn, None)
        self._thread = threading.get_ident()

    # ---- lifetime
    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def close(self) -> None:
        with self._close_lock:
            if self._h is not None:
                h, self._h = self._h, None
                self._L.bus_close(h)

    def drain(self, timeout: float = 1.0) -> None:
        """Unsubscribes, dispatches what arrived, waits until busd took what was published, closes."""
        self._check(self._L.bus_drain(self._handle(), _ns(timeout)))

    @property
    def name(self) -> str:
        return self._L.bus_name(self._handle()).decode()

    @property
    def agent_id(self) -> int:
        return int(self._L.bus_agent_id(self._handle()))

    @property
    def state(self) -> str:
        """"connecting", "connected", "disconnected" or "closed"."""
        if self._h is None:
            return "closed"
        return STATES.get(self._L.bus_get_state(self._h), "unknown")

    def on_state_change(self, fn: Callable[[str, Optional[BusError]], Any]) -> Callable[[str, Optional[BusError]], Any]:
        """fn(state, error_or_None) on each change (usable as a decorator)."""
        self._state_cb = fn
        return fn

    def stats(self) -> Dict[str, int]:
        s = _lib.Stats()
        s.struct_size = ctypes.sizeof(s)
        self._check(self._L.bus_get_stats(self._handle(), ctypes.byref(s)))
        return {f: int(getattr(s, f)) for f in _lib.STATS_FIELDS}

    # ---- publishing
    def publish(self, subject: str, data: Payload = b"", *, flush: bool = True) -> None:
        p, n = _buf(data)
        self._check(self._L.bus_publish_ex(self._handle(), subject.encode(), p, n, 0 if flush else 1))

    def flush(self) -> None:
        self._L.bus_flush(self._handle())

    def reserve(self, subject: str, max_payload: int) -> memoryview:
        """Zero copy: a writable view of ring memory for the payload; then commit(n) or abandon()."""
        out = ctypes.c_void_p()
        room = ctypes.c_size_t()
        self._check(self._L.bus_reserve(self._handle(), subject.encode(), max_payload, ctypes.byref(out), ctypes.byref(room)))
        return memoryview((ctypes.c_char * room.value).from_address(out.value)).cast("B")

    def commit(self, length: int, *, flush: bool = True) -> None:
        self._check(self._L.bus_commit(self._handle(), length, 0 if flush else 1))

    def abandon(self) -> None:
        self._L.bus_abandon(self._handle())

    # ---- subscribing
    def subscribe(self, pattern: str, handler: Optional[Handler] = None, *, queue: Optional[str] = None,
                  slow: str = "block", zero_copy: bool = False) -> Subscription:
        """Subscribes to `pattern`; returns once busd acknowledged it. With `handler` (or used as a
        decorator) each message goes to it; otherwise iterate the Subscription."""
        if slow not in _SLOW:
            raise ValueError(f"slow must be one of {', '.join(_SLOW)}")
        sub = Subscription(self, pattern, queue, zero_copy)
        sub.handler = handler
        sid = ctypes.c_uint32()
        self._check(self._L.bus_subscribe(self._handle(), pattern.encode(), queue.encode() if queue else None,
                                          _SLOW[slow], self._msg_fn, None, ctypes.byref(sid)))
        sub.sid = sid.value
        self._subs[sub.sid] = sub
        return sub

    def _unsubscribe(self, sid: int) -> None:
        self._subs.pop(sid, None)
        if self._h is not None:
            self._check(self._L.bus_unsubscribe(self._h, sid))

    def poll(self, timeout: Optional[float] = 0.0) -> int:
        """Dispatches received messages to handlers, waiting up to `timeout` s for the first.
        Returns how many; 0 on timeout, or at once when wake() is called (from another thread)."""
        n = ctypes.c_size_t()
        st = self._L.bus_poll(self._handle(), _ns(timeout), ctypes.byref(n))
        self._reraise()
        self._check(st)
        return n.value

    def run(self) -> None:
        """poll() until stop() (from a handler, another thread or a Python signal handler: it
        returns to Python at least every 0.2 s, so signal handlers run) or until closed."""
        self._stopped = False
        while not self._stopped and self._h is not None and self.state != "closed":
            self.poll(0.2)

    def stop(self) -> None:
        """Makes run() return (promptly from another thread: it wakes its poll; at once from a
        handler)."""
        self._stopped = True
        self.wake()

    def wake(self) -> None:
        """Ends the wait of a poll() in progress on another thread promptly (it returns 0), or, if
        none waits, the next poll()'s (once). The client goes on working. Thread-safe (also
        against close(); on a closed client it does nothing): an I/O thread that polls the
        client takes work queued for it by other threads, which call wake() after queueing.
        Costs an atomic exchange, plus one write(2) when the poller sleeps in the kernel."""
        with self._close_lock:
            if self._h is not None:
                self._L.bus_wake(self._h)

    # ---- request / reply
    def request(self, subject: str, data: Payload = b"", timeout: float = 1.0) -> Message:
        """Sends a request, waits for its reply. Raises NoRespondersError, TimeoutError,
        ClosedError, or what the responder answered (PermissionDenied, ...)."""
        p, n = _buf(data)
        raw = _lib.Message()
        st = self._L.bus_request(self._handle(), subject.encode(), p, n, _ns(timeout), ctypes.byref(raw))
        self._reraise()
        self._check(st)
        return Message(self, raw)

    def send_request(self, subject: str, data: Payload = b"", timeout: float = 1.0,
                     callback: Optional[Callable[[PendingReply], Any]] = None) -> PendingReply:
        """Sends a request without waiting (many may be in flight); the answer arrives during
        poll()/run(): callback(pending) is called and pending.result() returns it."""
        p, n = _buf(data)
        pending = PendingReply(self, callback)
        rid = ctypes.c_uint64()
        self._check(self._L.bus_send_request(self._handle(), subject.encode(), p, n, _ns(timeout), ctypes.byref(rid)))
        pending.id = rid.value
        self._pending[pending.id] = pending
        return pending

    def reply(self, request: Message, data: Payload = b"") -> None:
        p, n = _buf(data)
        if request._raw is not None:  # inside its handler: the fast path
            self._check(self._L.bus_reply(self._handle(), request._raw, p, n))
        else:
            self._check(self._L.bus_reply_to(self._handle(), request.reply_to.encode(), request.id, request.lane, 0, p, n))

    def reply_error(self, request: Message, error: Union[str, int, type], detail: str = "") -> None:
        """Answers with an error: a status name ("PermissionDenied"), code, or exception class."""
        if isinstance(error, type) and issubclass(error, BusError):
            code = error.code
        elif isinstance(error, str):
            if error not in BY_STATUS:
                raise ValueError(f"unknown status {error!r}")
            code = BY_STATUS[error]
        else:
            code = int(error)
        d = detail.encode()
        self._check(self._L.bus_reply_to(self._handle(), request.reply_to.encode(), request.id, request.lane,
                                         code, d, len(d)))

    # ---- discovery
    def find_agents(self, capability: str, name_glob: Optional[str] = None) -> List[AgentInfo]:
        lst = ctypes.c_void_p()
        self._check(self._L.bus_find_agents(self._handle(), capability.encode(),
                                            name_glob.encode() if name_glob else None, ctypes.byref(lst)))
        try:
            out = []
            info = _lib.AgentInfo()
            for i in range(self._L.bus_agent_list_size(lst)):
                self._check(self._L.bus_agent_list_get(lst, i, ctypes.byref(info)))
                caps = [info.capabilities[j].decode() for j in range(info.capabilities_len)]
                out.append(AgentInfo(info.name.decode(), info.agent_id, info.pid, info.uid, caps))
            return out
        finally:
            self._L.bus_agent_list_free(lst)

    # ---- internals
    def _handle(self) -> int:
        if self._h is None:
            raise from_code(10, "Closed: the client is closed")
        return self._h

    def _check(self, st: int) -> None:
        if st != 0:
            _raise(st)

    def _reraise(self) -> None:
        if self._error is not None:
            e, self._error = self._error, None
            raise e

    def _on_message(self, _user: int, _c: int, raw_p: "ctypes._Pointer[_lib.Message]") -> None:
        try:
            raw = raw_p.contents
            sub = self._subs.get(raw.sid)
            if sub is None:
                return
            if sub.handler is None:
                sub._pending.append(Message(self, raw))
                return
            msg = Message(self, raw, sub.zero_copy)
            msg._raw = raw_p
            try:
                sub.handler(msg)
            finally:
                msg._raw = None
                if isinstance(msg.payload, memoryview):
                    msg.payload.release()
        except BaseException as e:  # noqa: BLE001: a handler's error surfaces from poll()/run()
            if self._error is None:
                self._error = e
            self._stopped = True

    def _on_reply(self, _user: int, _c: int, rid: int, st: int, raw_p: "ctypes._Pointer[_lib.Message]") -> None:
        try:
            pending = self._pending.pop(rid, None)
            if pending is None:
                return
            if st == 0:
                pending.reply = Message(self, raw_p.contents)
            else:
                pending.error = from_code(st, (self._L.bus_last_error_message() or b"").decode("utf-8", "replace"))
            pending.done = True
            if pending.callback is not None:
                pending.callback(pending)
        except BaseException as e:  # noqa: BLE001
            if self._error is None:
                self._error = e

    def _on_state(self, _user: int, _c: int, state: int, st: int) -> None:
        try:
            if self._state_cb is not None:
                err = None
                if st != 0:
                    err = from_code(st, (self._L.bus_last_error_message() or b"").decode("utf-8", "replace"))
                self._state_cb(STATES.get(state, "unknown"), err)
        except BaseException as e:  # noqa: BLE001
            if self._error is None:
                self._error = e


def version() -> str:
    """The loaded libbus_c's version."""
    return _lib.lib().bus_version().decode()
