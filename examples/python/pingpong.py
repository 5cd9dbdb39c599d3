#!/usr/bin/env python3
"""pingpong: request/reply round trips through busd from Python, next to the C++ figure of the
same run (busbench-style). Starts a Python responder (pong, its own process) unless --no-pong,
then times --count requests from Python; with --cpp-ping PATH (examples/ping) it runs the C++
ping against the same responder right after, for the comparison.
    pingpong.py [--count N] [--payload B] [--wait adaptive|block|...]
                [--cpp-ping build/examples/ping [--cpp-pong build/examples/pong]]
    pingpong.py --pong                         (only the responder: on demo.ping, echoes)
"""
import argparse
import os
import subprocess
import sys
import time

import _path  # noqa: F401
import busd


def pong(wait: str) -> int:
    with busd.Client("pypong", wait=wait) as c:
        @c.subscribe("demo.ping")
        def echo(msg: busd.Message) -> None:
            msg.reply(msg.payload)

        print("ready", flush=True)
        c.run()
    return 0


def pct(sorted_us, p: float) -> float:
    return sorted_us[min(len(sorted_us) - 1, int(p / 100.0 * len(sorted_us)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--payload", type=int, default=64)
    ap.add_argument("--wait", default="adaptive", help="the wait strategy of both Python agents")
    ap.add_argument("--pong", action="store_true", help="run only the responder")
    ap.add_argument("--no-pong", action="store_true", help="a responder on demo.ping is already running")
    ap.add_argument("--cpp-ping", help="examples/ping, for the C++ figure against the same responder")
    ap.add_argument("--cpp-pong", help="examples/pong: with --cpp-ping, also C++ ping -> C++ pong (the baseline)")
    args = ap.parse_args()
    if args.pong:
        return pong(args.wait)
    responder = None
    if not args.no_pong:
        responder = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--pong", "--wait", args.wait],
                                     stdout=subprocess.PIPE, text=True)
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
        us = sorted(x / 1000.0 for x in rtt)
        print(f"python ping -> python pong: {len(us)} round trips ({args.payload} B, wait={args.wait}): "
              f"p50 {pct(us, 50):.1f} us  p99 {pct(us, 99):.1f} us  max {us[-1]:.1f} us  errors {errors}")
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
