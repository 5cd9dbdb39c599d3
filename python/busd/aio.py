"""asyncio interface: busd.AsyncClient.

    async with busd.AsyncClient("planner") as c:
        reply = await c.request("svc.plan", b"...", timeout=0.5)
        async for msg in c.subscribe("jobs.>", queue="workers"):
            await c.reply(msg, b"done")

A bus client is used by one thread at a time, so the AsyncClient owns a busd.Client on a
thread of its own (the I/O thread). Calls from the event loop are handed to it through a queue,
and Client.wake() (libbus's thread-safe wake-up) ends the I/O thread's wait in the C library's
poll at once, so a call made while it is idle costs a thread wake-up, not a polling period.
Messages and replies come back with loop.call_soon_threadsafe. Idle, the I/O thread sleeps in
the kernel (it wakes about once a second), so an idle AsyncClient costs practically no CPU.
"""
from __future__ import annotations

import asyncio
import queue as _queue
import threading
from typing import Any, AsyncIterator, Callable, Dict, List, Optional

from .client import AgentInfo, Client, Message, Payload
from .errors import BusError, ClosedError


class AsyncSubscription:
    """`async for msg in sub` yields messages (copies, safe to keep). Awaiting it waits until
    busd acknowledged the subscription. unsubscribe() ends the iteration."""

    def __init__(self, client: "AsyncClient", pattern: str, queue: Optional[str], slow: str) -> None:
        self._client = client
        self.pattern = pattern
        self._queue: "asyncio.Queue[Optional[Message]]" = asyncio.Queue()
        self._ready: "asyncio.Future[int]" = client._call(self._subscribe, queue, slow)
        self.sid = 0

    def _subscribe(self, c: Client, queue: Optional[str], slow: str) -> int:
        loop = self._client._loop

        def deliver(msg: Message) -> None:
            msg._client = None  # replies go through the AsyncClient
            loop.call_soon_threadsafe(self._queue.put_nowait, msg)

        return c.subscribe(self.pattern, deliver, queue=queue, slow=slow).sid

    def __await__(self) -> Any:
        async def ready() -> "AsyncSubscription":
            self.sid = await self._ready
            return self
        return ready().__await__()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        self.sid = await self._ready
        while True:
            msg = await self._queue.get()
            if msg is None:
                return
            yield msg

    async def get(self, timeout: Optional[float] = None) -> Message:
        self.sid = await self._ready
        msg = await asyncio.wait_for(self._queue.get(), timeout)
        if msg is None:
            raise ClosedError("Closed: unsubscribed")
        return msg

    async def unsubscribe(self) -> None:
        sid = await self._ready
        await self._client._call(lambda c: c._unsubscribe(sid))
        self._queue.put_nowait(None)


class AsyncClient:
    """`async with busd.AsyncClient("name", **options) as c:` (the options are Client's).
    `poll_interval`: the longest the I/O thread waits before it looks at its queue again even
    if nobody woke it (seconds; default 1.0). Calls wake it at once, so this does not bound their
    latency; it only makes the idle thread wake periodically."""

    def __init__(self, name: str, *, poll_interval: float = 1.0, **options: Any) -> None:
        if poll_interval <= 0:
            raise ValueError("poll_interval must be > 0")
        self.name = name
        self._options = options
        self._poll_interval = poll_interval
        self._commands: "_queue.SimpleQueue[Optional[Callable[[], None]]]" = _queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop
        self._thread: Optional[threading.Thread] = None
        self._client: Optional[Client] = None
        self._subs: List[AsyncSubscription] = []

    async def connect(self) -> "AsyncClient":
        self._loop = asyncio.get_running_loop()
        connected: "asyncio.Future[None]" = self._loop.create_future()
        self._thread = threading.Thread(target=self._io, args=(connected,), name=f"busd-io-{self.name}", daemon=True)
        self._thread.start()
        await connected
        return self

    async def __aenter__(self) -> "AsyncClient":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._thread is None:
            return
        self._commands.put(None)
        self._wake()
        thread, self._thread = self._thread, None
        await self._loop.run_in_executor(None, thread.join)
        for s in self._subs:
            s._queue.put_nowait(None)

    # ---- the I/O thread
    def _io(self, connected: "asyncio.Future[None]") -> None:
        loop = self._loop
        try:
            self._client = Client(self.name, **self._options)
        except BaseException as e:  # noqa: BLE001
            loop.call_soon_threadsafe(_set_exception, connected, e)
            return
        loop.call_soon_threadsafe(_set_result, connected, None)
        c = self._client
        try:
            while True:
                try:
                    while True:
                        cmd = self._commands.get_nowait()
                        if cmd is None:
                            return
                        cmd()
                except _queue.Empty:
                    pass
                try:
                    # Ends at once when a call queued something (it wakes the client), else
                    # after poll_interval: the thread sleeps in the kernel meanwhile.
                    c.poll(self._poll_interval)
                except BusError:
                    pass  # a closed connection: the calls report it
        finally:
            c.close()
            # Whatever is still queued fails with Closed.
            try:
                while True:
                    cmd = self._commands.get_nowait()
                    if cmd is not None:
                        cmd()
            except _queue.Empty:
                pass

    def _call(self, fn: Callable[..., Any], *args: Any) -> "asyncio.Future[Any]":
        """Runs fn(client, *args) on the I/O thread; its result or exception completes the future."""
        self._check_open()
        fut: "asyncio.Future[Any]" = self._loop.create_future()
        loop = self._loop

        def run(c: Client) -> None:
            try:
                r = fn(c, *args)
            except BaseException as e:  # noqa: BLE001
                loop.call_soon_threadsafe(_set_exception, fut, e)
                return
            loop.call_soon_threadsafe(_set_result, fut, r)

        self._submit(run, fut)
        return fut

    def _submit(self, run: Callable[[Client], None], fut: "asyncio.Future[Any]") -> None:
        """Queues run(client) for the I/O thread, and wakes it. `fut` fails with ClosedError
        instead if the client is closed by then (run() completes it otherwise)."""
        self._check_open()
        loop = self._loop

        def command() -> None:
            c = self._client
            if c is None or c._h is None:
                loop.call_soon_threadsafe(_set_exception, fut, ClosedError("Closed: the client is closed"))
                return
            run(c)

        self._commands.put(command)
        self._wake()  # after the put: the I/O thread's poll returns, then it reads the queue

    def _check_open(self) -> None:
        if self._thread is None:
            raise ClosedError("Closed: the client is not connected (use `async with` or connect())")

    def _wake(self) -> None:
        c = self._client
        if c is not None:  # None: not connected yet, and the thread reads the queue before it polls
            c.wake()

    # ---- the calls
    async def publish(self, subject: str, data: Payload = b"") -> None:
        data = bytes(data) if isinstance(data, (bytearray, memoryview)) else data  # the caller may reuse it
        await self._call(lambda c: c.publish(subject, data))

    async def request(self, subject: str, data: Payload = b"", timeout: float = 1.0) -> Message:
        """Many requests may be in flight at once (gather them)."""
        data = bytes(data) if isinstance(data, (bytearray, memoryview)) else data
        self._check_open()
        fut: "asyncio.Future[Message]" = self._loop.create_future()
        loop = self._loop

        def answered(p: Any) -> None:
            if p.error is not None:
                loop.call_soon_threadsafe(_set_exception, fut, p.error)
            else:
                p.reply._client = None
                loop.call_soon_threadsafe(_set_result, fut, p.reply)

        def send(c: Client) -> None:
            try:
                c.send_request(subject, data, timeout, answered)
            except BaseException as e:  # noqa: BLE001
                loop.call_soon_threadsafe(_set_exception, fut, e)

        # One future for the send and the answer: the event loop wakes once per request.
        self._submit(send, fut)
        return await fut

    def subscribe(self, pattern: str, *, queue: Optional[str] = None, slow: str = "block") -> AsyncSubscription:
        sub = AsyncSubscription(self, pattern, queue, slow)
        self._subs.append(sub)
        return sub

    async def reply(self, request: Message, data: Payload = b"") -> None:
        data = bytes(data) if isinstance(data, (bytearray, memoryview)) else data
        await self._call(lambda c: c.reply(request, data))

    async def reply_error(self, request: Message, error: Any, detail: str = "") -> None:
        await self._call(lambda c: c.reply_error(request, error, detail))

    async def find_agents(self, capability: str, name_glob: Optional[str] = None) -> List[AgentInfo]:
        return await self._call(lambda c: c.find_agents(capability, name_glob))

    async def stats(self) -> Dict[str, int]:
        return await self._call(lambda c: c.stats())

    async def drain(self, timeout: float = 1.0) -> None:
        await self._call(lambda c: c.drain(timeout))
        await self.close()


def _set_result(fut: "asyncio.Future[Any]", value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exception(fut: "asyncio.Future[Any]", e: BaseException) -> None:
    if not fut.done():
        fut.set_exception(e)
