#!/usr/bin/env python3
"""worker: a member of the "workers" queue group on tasks.plan (as examples/worker.cpp). Each task
is a list of numbers (text, space-separated); the answer is their sum and the worker's name.
    worker.py --name worker1 [--count N]          (Python and C++ workers mix in one group)
"""
import argparse
import signal

import _path  # noqa: F401
import busd


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", default="pyworker")
    ap.add_argument("--count", type=int, default=0, help="exit after this many tasks (0: until SIGINT/SIGTERM)")
    args = ap.parse_args()
    done = 0
    with busd.Client(args.name, capabilities=["plan"]) as c:
        signal.signal(signal.SIGTERM, lambda *_: c.stop())
        signal.signal(signal.SIGINT, lambda *_: c.stop())

        @c.subscribe("tasks.plan", queue="workers")
        def task(msg: busd.Message) -> None:
            nonlocal done
            msg.reply(f"{sum(int(x) for x in msg.text.split())} by {args.name}")
            done += 1
            if done == args.count:
                c.stop()

        c.run()
    print(f"{args.name}: {done} tasks done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
