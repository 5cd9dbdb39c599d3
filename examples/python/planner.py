#!/usr/bin/env python3
"""planner: finds the workers (capability "plan"), hands out tasks to their queue group with many
requests in flight, gathers the results (as examples/planner.cpp).
    planner.py [--tasks N] [--in-flight K] [--asyncio]
"""
import argparse
import asyncio
import collections
import time

import _path  # noqa: F401
import busd


def task(i: int) -> str:
    return f"{i} {i * 2} 1"  # sums to 3i + 1


def tally(results, by_worker, reply: busd.Message) -> int:
    total, _, worker = reply.text.partition(" by ")
    by_worker[worker] += 1
    return int(total)


def run_sync(args) -> "tuple[int, int, collections.Counter]":
    by_worker: collections.Counter = collections.Counter()
    total = failed = 0
    with busd.Client("planner") as c:
        workers = c.find_agents("plan")
        if not workers:
            raise SystemExit("planner: no agent with capability 'plan' (start some workers)")
        print(f"planner: {len(workers)} workers: {' '.join(w.name for w in workers)}")
        sent = answered = 0
        pending = collections.deque()
        while answered < args.tasks:
            while sent < args.tasks and sent - answered < args.in_flight:
                pending.append(c.send_request("tasks.plan", task(sent), timeout=5.0))
                sent += 1
            p = pending.popleft()
            try:
                total += tally(None, by_worker, p.result())
            except busd.BusError as e:
                failed += 1
                print(f"planner: task failed: {e}")
            answered += 1
    return total, failed, by_worker


async def run_async(args) -> "tuple[int, int, collections.Counter]":
    by_worker: collections.Counter = collections.Counter()
    async with busd.AsyncClient("planner") as c:
        workers = await c.find_agents("plan")
        if not workers:
            raise SystemExit("planner: no agent with capability 'plan' (start some workers)")
        print(f"planner: {len(workers)} workers: {' '.join(w.name for w in workers)}")
        sem = asyncio.Semaphore(args.in_flight)

        async def one(i: int) -> int:
            async with sem:
                return tally(None, by_worker, await c.request("tasks.plan", task(i), timeout=5.0))

        results = await asyncio.gather(*(one(i) for i in range(args.tasks)), return_exceptions=True)
    failed = sum(1 for r in results if isinstance(r, BaseException))
    return sum(r for r in results if isinstance(r, int)), failed, by_worker


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=16)
    ap.add_argument("--asyncio", action="store_true", help="use busd.AsyncClient")
    args = ap.parse_args()
    t0 = time.monotonic()
    total, failed, by_worker = asyncio.run(run_async(args)) if args.asyncio else run_sync(args)
    secs = time.monotonic() - t0
    expect = 3 * (args.tasks * (args.tasks - 1) // 2) + args.tasks
    print(f"planner: {args.tasks} tasks in {secs:.3f} s ({args.tasks / secs:.0f} tasks/s), {failed} failed, "
          f"sum {total} ({'correct' if total == expect else 'WRONG'})")
    for w, n in sorted(by_worker.items()):
        print(f"  {w:<12} {n}")
    return 0 if failed == 0 and total == expect else 1


if __name__ == "__main__":
    raise SystemExit(main())
