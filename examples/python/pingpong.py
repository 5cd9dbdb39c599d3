#!/usr/bin/env python3
"""pingpong: request/reply round trips through busd from Python, next to the C++ figure of the
same run (busbench-style). Starts a Python responder (pong, its own process) unless --no-pong,
then times --count requests from Python (busd.Client); with --async also from an asyncio agent
(busd.AsyncClient: one request awaited at a time); with --cpp-ping PATH (examples/ping) it runs
the C++ ping against the same responder right after, for the comparison.
    pingpong.py [--count N] [--payload B] [--wait adaptive|block|...] [--async] [--group pong]
                [--cpp-ping build/examples/ping [--cpp-pong build/examples/pong]] [--breakdown]
    pingpong.py --pong                         (only the responder: on demo.ping, echoes)
The Python responder subscribes without a queue group, so busd gives the requester a direct lane
to it; examples/pong subscribes in the queue group "pong", whose requests go through busd. With
--group pong the Python responder does the same, and all the figures take the same path.
--breakdown: where the time of the Python path goes (ctypes calls, building a Message, a C-to-
Python callback, the AsyncClient's hand-off between the event loop and its I/O thread).
"""
import argparse
import asyncio
import os
import subprocess
import sys
import time

import _path  # noqa: F401
import busd


def pong(wait: str, group) -> int:
    with busd.Client("pypong", wait=wait) as c:
        @c.subscribe("demo.ping", queue=group)
        def echo(msg: busd.Message) -> None:
            msg.reply(msg.payload)

        print("ready", flush=True)
        c.run()
    return 0


def pct(sorted_us, p: float) -> float:
    return sorted_us[min(len(sorted_us) - 1, int(p / 100.0 * len(sorted_us)))]


def report(label: str, rtt_ns, args, errors: int) -> None:
    us = sorted(x / 1000.0 for x in rtt_ns)
    if not us:
        print(f"{label}: no round trips, errors {errors}")
        return
    print(f"{label}: {len(us)} round trips ({args.payload} B, wait={args.wait}): "
          f"p50 {pct(us, 50):.1f} us  p99 {pct(us, 99):.1f} us  max {us[-1]:.1f} us  errors {errors}")


async def ping_async(args, data: bytes):
    """One request awaited at a time from an AsyncClient: the event loop hands each to the I/O
    thread (a queue and a wake-up) and gets the reply back through call_soon_threadsafe."""
    rtt = []
    errors = 0
    async with busd.AsyncClient("pyping-async", wait=args.wait) as c:
        for _ in range(min(100, args.count)):  # warm-up
            await c.request("demo.ping", data, timeout=1.0)
        for _ in range(args.count):
            t0 = time.perf_counter_ns()
            try:
                r = await c.request("demo.ping", data, timeout=1.0)
            except busd.BusError:
                errors += 1
                continue
            rtt.append(time.perf_counter_ns() - t0)
            if len(r.payload) != args.payload:
                errors += 1
    return rtt, errors


def per_call_ns(fn, n: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - t0) / n


def breakdown(args) -> None:
    """Times the parts of the Python path in this process (best of 5 rounds each)."""
    import ctypes
    from busd import _lib
    from busd.client import Message
    L = _lib.lib()
    n = 200_000
    with busd.Client("pybreakdown", wait=args.wait) as c:
        h = c._h
        f0 = L.bus_abi_version
        f1 = L.bus_get_state
        print(f"ctypes call, no argument (bus_abi_version):   {min(per_call_ns(f0, n) for _ in range(5)):7.0f} ns")
        print(f"ctypes call, a handle (bus_get_state):        {min(per_call_ns(lambda: f1(h), n) for _ in range(5)):7.0f} ns"
              "  (includes a Python lambda)")
        print(f"Python lambda alone:                          {min(per_call_ns(lambda: None, n) for _ in range(5)):7.0f} ns")
        raw = _lib.Message()
        subject, reply_to, payload = b"demo.ping", b"_INBOX.42", b"x" * args.payload
        raw.subject, raw.subject_len = ctypes.cast(subject, ctypes.c_void_p), len(subject)
        raw.reply_to, raw.reply_to_len = ctypes.cast(reply_to, ctypes.c_void_p), len(reply_to)
        raw.payload, raw.payload_len = ctypes.cast(payload, ctypes.c_void_p), len(payload)
        print(f"busd.Message from a bus_message ({args.payload} B copy): {min(per_call_ns(lambda: Message(c, raw), n // 4) for _ in range(5)):7.0f} ns")
        # A C-to-Python callback: libc's qsort calls a ctypes comparator (counted).
        libc = ctypes.CDLL(None)
        calls = [0]
        CMP = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)

        def cmp(a, b):
            calls[0] += 1
            return 0
        cb = CMP(cmp)
        arr = (ctypes.c_int * 1024)()
        best = None
        for _ in range(5):
            calls[0] = 0
            t0 = time.perf_counter_ns()
            libc.qsort(arr, 1024, 4, cb)
            per = (time.perf_counter_ns() - t0) / max(1, calls[0])
            best = per if best is None else min(best, per)
        print(f"C-to-Python callback (ctypes trampoline):     {best:7.0f} ns")

    async def handoff() -> float:
        async with busd.AsyncClient("pyhandoff", wait=args.wait) as ac:
            for _ in range(200):
                await ac._call(lambda cl: None)
            k = 5000
            t0 = time.perf_counter_ns()
            for _ in range(k):
                await ac._call(lambda cl: None)
            return (time.perf_counter_ns() - t0) / k
    print(f"AsyncClient hand-off, loop -> I/O thread -> loop (no bus traffic): {asyncio.run(handoff()) / 1000:.1f} us")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--payload", type=int, default=64)
    ap.add_argument("--wait", default="adaptive", help="the wait strategy of both Python agents")
    ap.add_argument("--async", dest="use_async", action="store_true",
                    help="also time requests from a busd.AsyncClient (asyncio)")
    ap.add_argument("--group", help="the Python responder's queue group (pong: as examples/pong, through busd)")
    ap.add_argument("--breakdown", action="store_true", help="time the parts of the Python path")
    ap.add_argument("--pong", action="store_true", help="run only the responder")
    ap.add_argument("--no-pong", action="store_true", help="a responder on demo.ping is already running")
    ap.add_argument("--cpp-ping", help="examples/ping, for the C++ figure against the same responder")
    ap.add_argument("--cpp-pong", help="examples/pong: with --cpp-ping, also C++ ping -> C++ pong (the baseline)")
    args = ap.parse_args()
    if args.pong:
        return pong(args.wait, args.group)
    responder = None
    if not args.no_pong:
        argv = [sys.executable, os.path.abspath(__file__), "--pong", "--wait", args.wait]
        if args.group:
            argv += ["--group", args.group]
        responder = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        if responder.stdout.readline().strip() != "ready":
            print("pingpong: the responder did not start", file=sys.stderr)
            return 1
    try:
        data = b"x" * args.payload
        rtt = []
        errors = 0
        with busd.Client("pyping", wait=args.wait) as c:
            for _ in range(min(100, args.count)):  # warm-up
                c.request("demo.ping", data, timeout=1.0)
            for _ in range(args.count):
                t0 = time.perf_counter_ns()
                try:
                    r = c.request("demo.ping", data, timeout=1.0)
                except busd.BusError:
                    errors += 1
                    continue
                rtt.append(time.perf_counter_ns() - t0)
                if len(r.payload) != args.payload:
                    errors += 1
        report("python ping -> python pong", rtt, args, errors)
        if args.use_async:
            artt, aerrors = asyncio.run(ping_async(args, data))
            report("async  ping -> python pong", artt, args, aerrors)
            errors += aerrors
        if args.breakdown:
            breakdown(args)
        if args.cpp_ping:
            out = subprocess.run([args.cpp_ping, "--count", str(args.count), "--payload", str(args.payload),
                                  "--wait", args.wait], capture_output=True, text=True)
            print("C++ ping    -> python pong: " + (out.stdout.strip() or out.stderr.strip()))
            if args.cpp_pong and responder is not None:
                responder.terminate()
                responder.wait(5)
                responder = subprocess.Popen([args.cpp_pong], stdout=subprocess.DEVNULL)  # its wait: adaptive
                time.sleep(0.3)
                out = subprocess.run([args.cpp_ping, "--count", str(args.count), "--payload", str(args.payload),
                                      "--wait", args.wait], capture_output=True, text=True)
                print("C++ ping    -> C++ pong:    " + (out.stdout.strip() or out.stderr.strip()))
        return 0 if errors == 0 else 1
    finally:
        if responder is not None:
            responder.terminate()
            responder.wait(5)


if __name__ == "__main__":
    raise SystemExit(main())
