"""The Python SDK (python/busd) against a real busd, with C++ agents (test_agent, the examples).
About 6 s in all."""
from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

import busd
from conftest import ROOT, example


def test_version_and_bad_input() -> None:
    assert busd.version() == "0.1.0"
    with pytest.raises(busd.BusError) as e:
        busd.Client("nobody", address="/nonexistent/busd.sock", reconnect=False, connect_timeout=0.2)
    assert str(e.value)  # the C library's message, not just a code
    with pytest.raises(busd.InvalidArgument, match="name"):
        busd.Client("")


def test_pubsub_python_to_cpp(bus) -> None:
    sub = bus.agent("sub", "py.seq", "--count", "50", "--name", "cpp-sub")
    with busd_client(bus, "py-pub") as c:
        for i in range(50):
            c.publish("py.seq", struct.pack("<Q", i))
        assert sub.wait(timeout=10) == 0  # the C++ agent got all 50, in order
    out = sub.stdout.read()
    assert "received 50 out_of_order 0" in out


def test_pubsub_cpp_to_python_iterator_and_decorator(bus) -> None:
    with busd_client(bus, "py-sub") as c:
        seen = []
        sub = c.subscribe("cpp.seq")
        got_cb = []

        @c.subscribe("cpp.seq", zero_copy=True)
        def on_seq(msg: busd.Message) -> None:
            assert isinstance(msg.payload, memoryview)
            got_cb.append(struct.unpack("<Q", msg.payload)[0])

        bus.agent("pub", "cpp.seq", "--count", "30", "--name", "cpp-pub")
        for msg in sub:
            assert msg.subject == "cpp.seq"
            seen.append(struct.unpack("<Q", msg.payload)[0])
            if len(seen) == 30:
                break
        deadline = time.monotonic() + 5
        while len(got_cb) < 30 and time.monotonic() < deadline:
            c.poll(0.05)
        assert seen == list(range(30))
        assert got_cb == list(range(30))
        sub.unsubscribe()


def test_request_reply_python_to_cpp(bus) -> None:
    bus.agent("serve", "svc.cpp", "--name", "cpp-server")
    with busd_client(bus, "py-req") as c:
        r = c.request("svc.cpp", b"hello", timeout=2.0)
        assert r.payload == b"cpp-server"
        assert c.stats()["requests"] == 1


def test_request_reply_cpp_to_python(bus) -> None:
    """The C++ planner example asks a Python worker (capability "plan", queue group "workers")."""
    planner = example("planner")
    if planner is None:
        pytest.skip("examples/planner is not built")
    with busd_client(bus, "py-worker", capabilities=["plan"]) as c:
        @c.subscribe("tasks.plan", queue="workers")
        def work(msg: busd.Message) -> None:
            msg.reply(f"{sum(int(x) for x in msg.text.split())} by py-worker")

        p = bus.process([planner, "--tasks", "40", "--in-flight", "4"], stdout=subprocess.PIPE, text=True)
        while p.poll() is None:
            c.poll(0.05)
        out = p.stdout.read()
        assert p.returncode == 0, out
        assert "correct" in out and "py-worker" in out


def test_errors_raise_documented_exceptions(bus) -> None:
    bus.agent("serve", "svc.silent", "--name", "cpp-silent", "--no-reply")
    with busd_client(bus, "py-err") as c:
        with pytest.raises(busd.NoRespondersError):
            c.request("svc.nobody", b"x", timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(busd.TimeoutError) as e:
            c.request("svc.silent", b"x", timeout=0.05)
        assert isinstance(e.value, TimeoutError)  # also the built-in one
        assert time.monotonic() - t0 < 1.0
        with pytest.raises(busd.InvalidArgument):
            c.publish("", b"x")
        with pytest.raises(ValueError):
            c.request("svc.nobody", b"x", timeout=-1)
    with pytest.raises(busd.ClosedError):
        c.publish("a.b", b"x")


def test_error_reply_and_acl_deny(busd_factory) -> None:
    d = busd_factory("""
[busd]
acl_owner_all = false

[[acl]]
name = "py-*"
publish = ["svc.>", "_INBOX.>"]
subscribe = ["svc.>"]
""")
    with busd_client(d, "py-server") as server, busd_client(d, "py-client") as client:
        @server.subscribe("svc.guarded")
        def guarded(msg: busd.Message) -> None:
            msg.reply_error(busd.PermissionDenied, "not for you")

        errors = []
        t = threading.Thread(target=lambda: _request_into(client, "svc.guarded", errors))
        t.start()
        deadline = time.monotonic() + 3
        while t.is_alive() and time.monotonic() < deadline:
            server.poll(0.02)
        t.join()
        assert len(errors) == 1 and isinstance(errors[0], busd.PermissionDenied)
        assert "not for you" in str(errors[0])
        with pytest.raises(busd.PermissionDenied):  # the ACL: no publish grant on jobs.>
            client.request("jobs.steal", b"x", timeout=1.0)
        with pytest.raises(busd.PermissionDenied):
            client.subscribe("jobs.>")


def test_asyncio_queue_group_with_cpp_worker(bus) -> None:
    """An asyncio agent serves a queue group beside a C++ worker; asyncio requests gathered."""
    bus.agent("serve", "tasks.q", "--group", "workers", "--name", "cpp-w")

    async def main() -> None:
        async with busd.AsyncClient("py-async", address=bus.socket) as server, \
                busd.AsyncClient("py-async-req", address=bus.socket) as requester:
            sub = await server.subscribe("tasks.q", queue="workers")

            async def serve() -> None:
                async for msg in sub:
                    await server.reply(msg, b"py-async")

            task = asyncio.create_task(serve())
            replies = await asyncio.gather(*(requester.request("tasks.q", b"t", timeout=2.0) for _ in range(40)))
            names = {r.payload for r in replies}
            assert names <= {b"py-async", b"cpp-w"}
            assert len(replies) == 40
            assert b"py-async" in names and b"cpp-w" in names, names
            with pytest.raises(busd.NoRespondersError):
                await requester.request("tasks.none", b"x", timeout=1.0)
            await sub.unsubscribe()
            await task

    asyncio.run(asyncio.wait_for(main(), 20))


def test_killing_a_python_agent_mid_request(bus) -> None:
    """As for a C++ agent: a request pending at a Python responder killed with -9 fails fast with
    NoResponders, not at its deadline."""
    code = ("import sys, time; sys.path.insert(0, %r); import busd\n"
            "c = busd.Client('py-victim')\n"
            "c.subscribe('svc.victim', lambda m: time.sleep(60))\n"
            "print('ready', flush=True)\n"
            "c.run()\n") % str(ROOT / "python")
    victim = bus.process([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert victim.stdout.readline().strip() == "ready"
    time.sleep(0.1)
    threading.Timer(0.3, lambda: os.kill(victim.pid, signal.SIGKILL)).start()
    with busd_client(bus, "py-requester") as c:
        t0 = time.monotonic()
        with pytest.raises(busd.NoRespondersError):
            c.request("svc.victim", b"will you answer?", timeout=10.0)
        assert time.monotonic() - t0 < 3.0
    assert victim.wait(5) == -signal.SIGKILL


def _request_into(c: busd.Client, subject: str, errors: list) -> None:
    try:
        c.request(subject, b"x", timeout=2.0)
    except busd.BusError as e:
        errors.append(e)


def busd_client(d, name: str, **kw) -> busd.Client:
    return busd.Client(name, address=d.socket, **kw)


def test_zero_copy_discovery_counters_state(bus) -> None:
    states = []
    with busd_client(bus, "py-a", capabilities=["alpha", "beta"]) as a, busd_client(bus, "py-b") as b:
        sub = b.subscribe("zc.>")
        buf = a.reserve("zc.one", 32)
        assert len(buf) >= 32 and not buf.readonly
        buf[:5] = b"hello"
        a.commit(5)
        with pytest.raises(busd.InvalidArgument):
            a.commit(1)  # nothing reserved any more
        assert sub.next(timeout=2).payload == b"hello"
        found = b.find_agents("beta")
        assert [(f.name, f.capabilities, f.pid) for f in found] == [("py-a", ["alpha", "beta"], os.getpid())]
        assert b.find_agents("gamma") == []
        # send_request: many in flight, answered from poll()
        @a.subscribe("svc.double")
        def double(msg: busd.Message) -> None:
            msg.reply(msg.payload * 2)

        pending = [b.send_request("svc.double", str(i), timeout=2.0) for i in range(5)]
        deadline = time.monotonic() + 3
        while not all(p.done for p in pending) and time.monotonic() < deadline:
            a.poll(0.01)
            b.poll(0.01)
        assert [p.result(0).payload for p in pending] == [str(i).encode() * 2 for i in range(5)]
        assert a.stats()["published"] >= 1 and b.stats()["requests"] == 5

        a.on_state_change(lambda s, err: states.append(s))
        assert a.state == "connected"
        a.drain(1.0)
        assert a.state == "closed" and states[-1] == "closed"


def test_messages_of_every_length_read_back_exactly(bus) -> None:
    """Received messages are copied through ctypes array types cached by length (at most 512
    lengths, then ctypes.string_at): 700 lengths, so both paths, and subjects of many lengths."""
    from busd import client as client_mod
    with busd_client(bus, "py-len-sub") as sub, busd_client(bus, "py-len-pub") as pub:
        got = []

        @sub.subscribe("len.>")
        def on(msg: busd.Message) -> None:
            got.append((msg.subject, bytes(msg.payload), msg.is_request, msg.reply_to))

        # The subscription reaches busd before the first publish (acknowledged at subscribe).
        sent = []
        for n in range(700):
            subject = "len." + "s" * (n % 90 + 1)
            payload = bytes((n + i) % 251 for i in range(n))
            pub.publish(subject, payload)
            sent.append((subject, payload, False, ""))
            if n % 50 == 49:
                while len(got) < n + 1:
                    sub.poll(0.5)
        while len(got) < len(sent):
            sub.poll(0.5)
        assert got == sent
        assert len(client_mod._ARRAYS) <= client_mod._ARRAYS_MAX
