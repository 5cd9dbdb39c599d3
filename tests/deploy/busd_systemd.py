#!/usr/bin/env python3
"""busd as systemd sees it, without systemd: a child busd with the variables systemd would set.

notify:  $NOTIFY_SOCKET (an abstract socket this test binds): READY=1 arrives only once busd's
         control socket accepts; WATCHDOG=1 arrives every tick while $WATCHDOG_USEC is set;
         SIGTERM gives STOPPING=1 and a clean exit.
journal: $JOURNAL_STREAM naming busd's stderr (dev:ino of the file it writes to): every line
         starts with its level's syslog priority (<3> error, <4> warn, <6> info, <7> debug; a
         stale socket left in busd's way makes the warning); with JOURNAL_STREAM unset or naming
         another file, the lines are unchanged.
Usage: busd_systemd.py BUSD. Takes about 2 s (10 s at most per busd).
"""
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from bustest import accepts  # noqa: E402  (tests/integration/bustest.py)

BUSD = sys.argv[1]
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        failures.append(what)


def config(tmp):
    path = os.path.join(tmp, "busd.toml")
    with open(path, "w") as f:
        f.write('[busd]\nsocket = "%s"\n' % os.path.join(tmp, "busd.sock"))
    return path


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None
    return p.returncode


def test_notify():
    with tempfile.TemporaryDirectory() as tmp:
        name = "busd-test-notify-%d" % os.getpid()
        rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        rx.bind("\0" + name)
        rx.settimeout(10)
        env = dict(os.environ, NOTIFY_SOCKET="@" + name, WATCHDOG_USEC="1000000")
        env.pop("WATCHDOG_PID", None)
        sock = os.path.join(tmp, "busd.sock")
        p = subprocess.Popen([BUSD, "--config", config(tmp)], env=env,
                             stderr=open(os.path.join(tmp, "stderr"), "w"))
        try:
            first = rx.recv(4096)
            # READY=1 means agents can connect now (not: soon).
            up = accepts(sock)
            check(first == ("READY=1\nSTATUS=accepting agents on %s" % sock).encode(),
                  "first datagram is READY=1 with a STATUS (got %r)" % first)
            check(up, "the control socket accepts when READY=1 arrives")
            t0 = time.monotonic()
            pings = [rx.recv(4096), rx.recv(4096)]
            took = time.monotonic() - t0
            check(pings == [b"WATCHDOG=1", b"WATCHDOG=1"], "WATCHDOG=1 pings follow (got %r)" % pings)
            check(took < 2.5, "two pings within 2.5 s (WatchdogSec=1s needs one per 0.5-1 s): %.2f s" % took)
            p.send_signal(signal.SIGTERM)
            seen = []
            while True:  # watchdog pings may still come before STOPPING=1
                d = rx.recv(4096)
                seen.append(d)
                if d != b"WATCHDOG=1":
                    break
            check(seen[-1] == b"STOPPING=1", "SIGTERM gives STOPPING=1 (got %r)" % seen[-1])
            rc = p.wait(timeout=10)
            check(rc == 0, "busd exits 0 after draining (rc %r)" % rc)
        finally:
            stop(p)
            rx.close()


def run_logging(tmp, journal_stream, extra_args=()):
    """Runs busd until busd_started is logged, with a stale socket to make it warn; returns its stderr."""
    sock = os.path.join(tmp, "busd.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock)  # bound, never listening, closed: what a killed busd leaves
    stale.close()
    err_path = os.path.join(tmp, "stderr")
    err = open(err_path, "w")
    st = os.fstat(err.fileno())
    env = dict(os.environ)
    env.pop("JOURNAL_STREAM", None)
    if journal_stream == "match":
        env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
    elif journal_stream == "other":
        env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino + 1)
    p = subprocess.Popen([BUSD, "--config", config(tmp), *extra_args], env=env, stderr=err)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "busd_started" not in open(err_path).read():
            time.sleep(0.05)
    finally:
        rc = stop(p)
        err.close()
    check(rc == 0, "busd (JOURNAL_STREAM %s) started and stopped cleanly (rc %r)" % (journal_stream, rc))
    return open(err_path).read().splitlines()


def test_journal():
    with tempfile.TemporaryDirectory() as tmp:
        lines = run_logging(tmp, "match", ["--log-level", "debug"])
        check(len(lines) >= 3, "journal: several lines logged (%d)" % len(lines))
        check(all(re.match(r"^<[3467]>ts=\S+ level=(error|warn|info|debug) event=", l) for l in lines),
              "journal: every line starts with <N>ts=...: %r" % lines[:3])
        prio = {"error": "<3>", "warn": "<4>", "info": "<6>", "debug": "<7>"}
        check(all(l.startswith(prio[re.search(r" level=(\w+) ", l).group(1)]) for l in lines),
              "journal: each prefix is the line's level's syslog priority")
        check(any(l.startswith("<4>") and "event=stale_socket_removed" in l for l in lines),
              "journal: the stale socket warning carries <4>")
        check(any(l.startswith("<6>") and "event=busd_started" in l for l in lines),
              "journal: busd_started carries <6>")
    for mode in ("unset", "other"):
        with tempfile.TemporaryDirectory() as tmp:
            lines = run_logging(tmp, mode)
            check(len(lines) >= 3 and all(l.startswith("ts=") for l in lines),
                  "JOURNAL_STREAM %s: lines unchanged, no prefix: %r" % (mode, lines[:2]))


test_notify()
test_journal()
print("%d failed" % len(failures) if failures else "busd_systemd: all checks passed")
sys.exit(1 if failures else 0)
