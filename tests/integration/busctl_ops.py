#!/usr/bin/env python3
"""Every busctl subcommand against live busd processes, tables and JSON parsed and checked
against what the test did:
  * one busd (lanes off, so every message passes busd and is counted there): status (and its
    alias stat), agents, subjects (with the overflow row: one agent subscribes to more patterns
    than the page has slots), pub/sub/req round trips as text and as JSON through a FlatBuffers
    schema, the exit codes for timeout, no responders, invalid input and usage, top
    --iterations as plain text and as JSON lines with rates computed while a publisher runs;
  * two linked busd on loopback (alpha dials beta): links on both sides, a message across the
    link counted on both, and a direct lane between two agents of alpha in `busctl lanes`;
  * config check on good and bad files; `busctl completion bash` passes `bash -n` and completes.
Takes about 10 s. Usage: busctl_ops.py BUSCTL BUSD TEST_AGENT FAULT_AGENT ORDER_FBS"""
import fcntl
import json
import os
import pty
import select
import struct
import termios
import signal
import subprocess
import sys
import tempfile
import time
from bustest import PrivateBusd, eventually, free_port  # noqa: E402  (this directory)

busctl, busd, test_agent, fault_agent, order_fbs = sys.argv[1:6]
ORDER = ["--json", "--schema", order_fbs, "--type", "busctl_test.Order"]


class Busd(PrivateBusd):
    def __init__(self, d, name, conf=""):
        super().__init__(busd, d, name, conf)

    def run(self, args, rc=0, input=None, timeout=15):
        r = subprocess.run([busctl] + args, env=self.env, capture_output=True, text=True,
                           timeout=timeout, input=input)
        assert r.returncode == rc, f"busctl {args}: exit {r.returncode}, wanted {rc}\n{r.stdout}\n{r.stderr}"
        return r

    def json(self, args):
        return json.loads(self.run(args + ["--json"]).stdout)

    def spawn(self, args, stdout=subprocess.PIPE):
        return subprocess.Popen(args, env=self.env, stdout=stdout, stderr=subprocess.PIPE, text=True)

    def sub(self, args):
        """busctl sub ARGS, returned once it is listening."""
        p = self.spawn([busctl, "sub"] + args)
        line = p.stderr.readline()
        assert line.startswith("busctl: listening on"), line
        return p

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        self.log.close()
        assert rc == 0, f"busd exited {rc}"


def table(out, header_first):
    """The rows of the table whose header starts with header_first, split on runs of blanks."""
    lines = out.splitlines()
    at = next(i for i, l in enumerate(lines) if l.split()[:1] == [header_first])
    rows = []
    for l in lines[at + 1:]:
        if not l.strip():
            break
        rows.append(l.split())
    return lines[at].split(), rows


def top_on_terminal(env, key):
    """busctl top on a pseudo-terminal (40x120): full screen until `key` (q, or Ctrl-C via the
    terminal's ISIG); returns (exit status, everything it wrote)."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(busctl, [busctl, "top", "--interval", "200ms"], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    out = b""
    sent = False
    end = time.monotonic() + 10
    status = None
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            out += chunk
        if not sent and out.count(b"AGENTS") >= 2:  # two refreshes drawn
            os.write(fd, key)
            sent = True
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    try:
        while select.select([fd], [], [], 0.1)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    os.close(fd)
    return status, out.decode(errors="replace")


procs = []


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


with tempfile.TemporaryDirectory(prefix="busctl-ops-") as d:
    daemons = []
    try:
        # ================= one busd, every message through it =================
        # 64 agents: the page has 256 pattern slots (the overflow row is reachable).
        # A TCP listener for remote agents: busctl with --socket tcp://.
        tcp = free_port()
        a = Busd(d, "single", f'[busd]\nlanes = false\ntcp_listen = "127.0.0.1:{tcp}"\n[limits]\nmax_agents = 64\n'
                 '[[acl]]\nuid = 65534\nname = "busctl-*"\npublish = [">"]\nsubscribe = [">"]\n')
        daemons.append(a)

        # ---- status, and stat as its alias ----
        s = a.json(["status"])
        assert s["live"] is True and s["pid"] == a.proc.pid and s["pid_alive"] is True, s
        version = a.run(["--version"]).stdout.strip()
        assert s["busd_version"] == version and s["uptime_ns"] > 0, (s, version)
        assert s["max_links"] >= 1 and s["links_listed"] == 0, s
        assert a.json(["stat"])["pid"] == a.proc.pid
        t = a.run(["status"]).stdout
        assert t.startswith(f"busd {version}  pid {a.proc.pid}  up ") and "live" in t, t
        assert "link slots 0/" in t, t

        # ---- pub / sub as text ----
        sub = a.sub(["ops.text", "--count", "3", "--timeout", "5s"])
        procs.append(sub)
        a.run(["pub", "ops.text", "hello world"])
        a.run(["pub", "ops.text", "-", "--count", "2", "--name", "ops-pub"], input="from stdin")
        out, _ = sub.communicate(timeout=10)
        assert sub.returncode == 0, sub.returncode
        assert out.splitlines() == ["ops.text hello world", "ops.text from stdin", "ops.text from stdin"], out

        # ---- sub --timeout before --count: 3 ----
        sub = a.sub(["ops.none", "--count", "1", "--timeout", "300ms"])
        procs.append(sub)
        _, err = sub.communicate(timeout=10)
        assert sub.returncode == 3 and "timeout" in err, (sub.returncode, err)

        # ---- req: a reply, no responders (4), timeout (3) ----
        responder = a.sub(["ops.echo", "--reply", "pong", "--name", "ops-responder"])
        procs.append(responder)
        assert a.run(["req", "ops.echo", "ping"]).stdout == "pong\n"
        assert responder.stdout.readline() == "ops.echo ping\n"
        # The same from a remote agent over TCP: --socket, or BUS_SOCKET.
        assert a.run(["--socket", f"tcp://127.0.0.1:{tcp}", "req", "ops.echo", "ping"]).stdout == "pong\n"
        assert responder.stdout.readline() == "ops.echo ping\n"
        r = subprocess.run([busctl, "req", "ops.echo", "ping"], env=dict(a.env, BUS_SOCKET=f"tcp://127.0.0.1:{tcp}"),
                           capture_output=True, text=True, timeout=15)
        assert r.returncode == 0 and r.stdout == "pong\n", r
        assert responder.stdout.readline() == "ops.echo ping\n"
        r = a.run(["--socket", f"tcp://127.0.0.1:{tcp}", "status"], rc=1)
        assert "remote busd" in r.stderr, r.stderr
        # Refused (7): the agent name is taken.
        r = a.run(["pub", "ops.echo", "x", "--name", "ops-responder"], rc=7)
        assert "already registered" in r.stderr, r.stderr
        r = a.run(["req", "ops.nobody", "ping"], rc=4)
        assert "no responders" in r.stderr, r.stderr
        silent = a.sub(["ops.silent"])  # receives the request, never answers
        procs.append(silent)
        t0 = time.monotonic()
        r = a.run(["req", "ops.silent", "ping", "--timeout", "300ms"], rc=3)
        assert "timeout" in r.stderr and 0.25 < time.monotonic() - t0 < 5, r.stderr

        # ---- latency: the three answered requests (not the unanswered ones) in the histogram ----
        lat = a.json(["status"])["latency"]
        rr = lat["request_reply"]
        assert rr["count"] == 3 and sum(b[2] for b in rr["buckets"]) == 3, rr
        assert all(lo <= hi for lo, hi, _ in rr["buckets"]), rr
        assert 0 < rr["p50_ns"] <= rr["p99_ns"] <= rr["p999_ns"] <= rr["max_ns"] < 5e9, rr
        assert rr["mean_ns"] <= rr["max_ns"], rr
        assert lat["link_rtt"]["count"] == 0 and lat["link_rtt"]["p50_ns"] == 0, lat  # no links here
        t = a.run(["status"]).stdout
        assert "LATENCY (since busd started" in t, t
        row = next(l.split() for l in t.splitlines() if l.startswith("request_reply "))
        assert row[1] == "3", row

        # ---- JSON payloads through the schema ----
        orders = a.sub(["ops.orders"] + ORDER + ["--reply", '{"id": 99, "symbol": "ACK"}', "--count", "2"])
        procs.append(orders)
        order = {"id": 7, "symbol": "ABC", "side": "Sell", "qty": 300, "tags": ["a", "b"]}
        a.run(["pub", "ops.orders", json.dumps(order)] + ORDER)
        reply = json.loads(a.run(["req", "ops.orders", '{"id": 8, "symbol": "XYZ"}'] + ORDER).stdout)
        assert reply == {"id": 99, "symbol": "ACK", "side": "Buy", "qty": 1}, reply
        out, _ = orders.communicate(timeout=10)
        assert orders.returncode == 0, orders.returncode
        got = [json.loads(l) for l in out.splitlines()]
        assert got[0] == {"subject": "ops.orders", "data": order}, got
        assert got[1] == {"subject": "ops.orders", "data": {"id": 8, "symbol": "XYZ", "side": "Buy", "qty": 1}}, got
        # A text payload where a FlatBuffer is expected: printed as an error, exit 5.
        bad = a.sub(["ops.orders2"] + ORDER + ["--count", "1"])
        procs.append(bad)
        a.run(["pub", "ops.orders2", "not a flatbuffer"])
        _, err = bad.communicate(timeout=10)
        assert bad.returncode == 5 and "not a valid busctl_test.Order" in err, (bad.returncode, err)
        # Invalid input: JSON that does not fit the schema, an unknown table, a missing schema.
        r = a.run(["pub", "ops.orders", '{"id": 1, "nope": 2}'] + ORDER, rc=5)
        assert "nope" in r.stderr, r.stderr
        r = a.run(["pub", "ops.orders", "{}", "--json", "--schema", order_fbs, "--type", "Nope"], rc=5)
        assert "no such table" in r.stderr and "busctl_test.Order" in r.stderr, r.stderr
        a.run(["pub", "ops.orders", "{}", "--json", "--schema", os.path.join(d, "none.fbs"), "--type", "X"], rc=5)
        a.run(["pub", "bad..subject", "x"], rc=5)
        # Usage: --json without a schema, --schema without --json, a missing argument.
        a.run(["pub", "ops.orders", "{}", "--json"], rc=2)
        a.run(["pub", "ops.orders", "{}", "--schema", order_fbs, "--type", "busctl_test.Order"], rc=2)
        a.run(["req", "ops.echo"], rc=2)
        a.run(["sub"], rc=2)
        a.run(["req", "ops.echo", "x", "--timeout", "soon"], rc=2)
        # busd not there: 1.
        gone = os.path.join(d, "gone.sock")
        a.run(["--socket", gone, "pub", "x", "y"], rc=1)
        a.run(["--socket", gone, "req", "x", "y"], rc=1)
        a.run(["--socket", gone, "status"], rc=1)

        # ---- agents: the long-lived responders, with their names and pids ----
        rows = {x["name"]: x for x in a.json(["agents"])["agents"]}
        assert rows["ops-responder"]["pid"] == responder.pid and rows["ops-responder"]["subscriptions"] == 1, rows
        assert rows["ops-responder"]["messages_out"] == 3 and rows["ops-responder"]["messages_in"] == 3, rows
        assert f"busctl-{silent.pid}" in rows, rows

        # ---- subjects: two subscribers on overlapping patterns, then the overflow row ----
        stop_all()
        procs.clear()
        assert eventually(lambda: a.json(["agents"])["agents"] == []), a.json(["agents"])
        exact = a.sub(["sub.orders", "--name", "exact"])
        wild = a.sub(["sub.>", "--name", "wild"])
        procs += [exact, wild]
        a.run(["pub", "sub.orders", "x" * 10, "--count", "5"])
        a.run(["pub", "sub.other", "y", "--count", "2"])
        want = {"sub.orders": (1, 5), "sub.>": (1, 7)}

        def subjects_settled():
            got = {p["pattern"]: (p["subscribers"], p["messages"]) for p in a.json(["subjects"])["subjects"]}
            return got if got == want else None
        assert eventually(subjects_settled), a.json(["subjects"])
        sj = a.json(["subjects"])
        assert sj["live"] is True and sj["max_patterns"] >= 256, sj
        for p in sj["subjects"]:
            assert p["overflow"] is False and p["drops"] == 0 and p["bytes"] > 0, p
        by = {p["pattern"]: p for p in sj["subjects"]}
        assert by["sub.orders"]["bytes"] < by["sub.>"]["bytes"], by
        header, rows = table(a.run(["subjects"]).stdout, "PATTERN")
        assert header == ["PATTERN", "SUBSCRIBERS", "MESSAGES", "BYTES", "DROPS"], header
        assert [r[:3] for r in rows] == [["sub.>", "1", "7"], ["sub.orders", "1", "5"]], rows
        # More patterns than the page's pattern slots: the rest share the overflow row.
        n = sj["max_patterns"] + 4
        many = a.sub([f"many.{i}" for i in range(n)] + ["--name", "many"])
        procs.append(many)
        a.run(["pub", f"many.{n - 1}", "z", "--count", "3"])
        a.run(["pub", "many.0", "z"])

        def overflow():
            ps = a.json(["subjects"])["subjects"]
            o = [p for p in ps if p["overflow"]]
            return (ps, o[0]) if o and o[0]["messages"] >= 3 else None
        got = eventually(overflow)
        assert got, a.json(["subjects"])
        ps, over = got
        assert ps[-1] is over and over["pattern"] == "" and over["subscribers"] >= 1, over
        assert next(p for p in ps if p["pattern"] == "many.0")["messages"] == 1, ps
        assert "(other patterns: pattern table full)" in a.run(["subjects"]).stdout
        many.send_signal(signal.SIGTERM)
        many.wait(timeout=10)

        # ---- top: plain snapshots and JSON lines, rates from a running publisher ----
        pub = a.spawn([busctl, "pub", "sub.orders", "tick", "--count", "1"], stdout=subprocess.DEVNULL)
        pub.wait(timeout=10)
        loader = subprocess.Popen(["bash", "-c", f'while :; do "{busctl}" pub sub.orders tick --count 20 || exit 1; '
                                   'sleep 0.05; done'], env=a.env)
        procs.append(loader)
        r = a.run(["top", "--iterations", "2", "--interval", "300ms"])
        assert "\x1b" not in r.stdout, "escape codes on a pipe"
        frames = r.stdout.split("\n\n" + "busd ")
        assert len(frames) == 2, r.stdout
        assert r.stdout.count(f"pid {a.proc.pid}") == 2 and "every 300ms" in r.stdout, r.stdout
        for section in ("AGENTS", "SUBJECTS", "MSGS_IN/s", "drop_oldest", "retransmits", "latency   request_reply"):
            assert section in r.stdout, section
        t0 = time.monotonic()
        r = a.run(["top", "--iterations", "3", "--interval", "300ms", "--json"])
        took = time.monotonic() - t0
        lines = r.stdout.splitlines()
        assert len(lines) == 3 and 0.5 < took < 5, (len(lines), took)
        frames = [json.loads(l) for l in lines]
        assert [f["frame"] for f in frames] == [1, 2, 3], frames
        for f in frames:
            assert f["live"] is True and f["pid"] == a.proc.pid and f["interval_ns"] > 0, f
            assert set(f) >= {"rates", "totals", "agents", "links", "subjects"}, f.keys()
            assert "slow_drops_oldest" in f["rates"] and "slow_waiting_bytes" not in f["rates"], f["rates"]
            # This interval's latency only: no requests while top ran.
            assert f["latency"]["request_reply"]["count"] == 0, f["latency"]
        assert any(f["rates"]["messages_in"] > 0 for f in frames), [f["rates"] for f in frames]
        assert frames[-1]["totals"]["messages_in"] >= frames[0]["totals"]["messages_in"] > 0, frames
        # The rate agrees with the totals it was computed from (within the interval's reading).
        last, prev = frames[2], frames[1]
        dt = last["interval_ns"] / 1e9
        want = (last["totals"]["messages_out"] - prev["totals"]["messages_out"]) / dt
        assert abs(last["rates"]["messages_out"] - want) <= max(1.0, want * 0.5), (last["rates"], want)
        exact_row = next(x for x in frames[-1]["agents"] if x["name"] == "exact")
        assert exact_row["messages_out"] > 0 and exact_row["messages_out_per_s"] is not None, exact_row
        # On a terminal: the alternate screen, redrawn in place; q and Ctrl-C quit and restore it.
        for key in (b"q", b"\x03"):
            status, screen = top_on_terminal(a.env, key)
            assert status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (key, status, screen)
            assert screen.count("\x1b[?1049h") == 1 and screen.rstrip().endswith("\x1b[?1049l"), (key, screen[-200:])
            assert "\x1b[H" in screen and "(q quits)" in screen and "exact" in screen, (key, screen[-2000:])
        loader.send_signal(signal.SIGTERM)
        loader.wait(timeout=10)
        a.run(["top", "--interval", "10ms", "--iterations", "1"], rc=2)
        stop_all()
        procs.clear()
        a.stop()
        daemons.remove(a)
        a.run(["status"], rc=1)
        a.run(["top", "--iterations", "1"], rc=1)

        # ================= two linked busd: links and lanes =================
        pa, pb = free_port(), free_port()

        def cluster(node, port, peer=None):
            c = (f'[cluster]\nname = "ops"\nnode = "{node}"\nlisten = "127.0.0.1:{port}"\n'
                 "heartbeat_ms = 100\ndead_after_ms = 600\nbackoff_min_ms = 20\nbackoff_max_ms = 200\n")
            if peer:
                c += f'[[links]]\nkind = "tcp"\npeer = "127.0.0.1:{peer}"\n'
            return c
        beta = Busd(d, "beta", cluster("beta", pb))
        daemons.append(beta)
        alpha = Busd(d, "alpha", cluster("alpha", pa, pb))
        daemons.append(alpha)

        def link_to(b, node):
            ls = [k for k in b.json(["links"])["links"] if k["node"] == node and k["state"] == "up"]
            return ls[0] if ls else None
        assert eventually(lambda: link_to(alpha, "beta") and link_to(beta, "alpha")), (
            alpha.json(["links"]), beta.json(["links"]))
        remote_sub = beta.sub(["across.>", "--count", "4", "--name", "on-beta"])
        procs.append(remote_sub)
        # alpha learns beta's interest, then 4 messages cross the link.
        assert eventually(lambda: (link_to(alpha, "beta") or {}).get("interests", 0) >= 1), alpha.json(["links"])
        alpha.run(["pub", "across.x", "over the link", "--count", "4"])
        out, _ = remote_sub.communicate(timeout=10)
        assert out.splitlines() == ["across.x over the link"] * 4, out
        assert eventually(lambda: link_to(alpha, "beta")["messages_out"] == 4
                          and link_to(beta, "alpha")["messages_in"] == 4)
        la, lb = link_to(alpha, "beta"), link_to(beta, "alpha")
        assert la["kind"] == "tcp" and la["address"] == f"127.0.0.1:{pb}" and la["up"] is True, la
        assert la["bytes_out"] > 4 * len("over the link") and lb["bytes_in"] == la["bytes_out"], (la, lb)
        assert la["connects"] >= 1 and la["drops"]["total"] == 0, la
        assert eventually(lambda: link_to(alpha, "beta")["rtt_ns"] > 0), alpha.json(["links"])
        assert alpha.json(["status"])["counters"]["links_up"] == 1
        header, rows = table(alpha.run(["links"]).stdout, "NODE")
        assert header == ["NODE", "KIND", "ADDRESS", "STATE", "MSGS_IN", "MSGS_OUT", "BYTES_IN", "BYTES_OUT",
                          "DROPS", "HELD", "HELD_HWM", "RTT", "RETRANS", "NAKS", "INTERESTS",
                          "REMOTE_AGENTS"], header
        row = next(r for r in rows if r[0] == "beta")
        assert row[1:4] == ["tcp", f"127.0.0.1:{pb}", "up"] and row[5] == "4", row
        # An agent on beta is a remote agent on alpha.
        idle = beta.spawn([test_agent, "idle", "--name", "beta-idle"])
        procs.append(idle)
        assert idle.stdout.readline().strip() == "ready"
        assert eventually(lambda: link_to(alpha, "beta")["remote_agents"] >= 1), alpha.json(["links"])
        # top shows the link.
        f = json.loads(alpha.run(["top", "--iterations", "1", "--interval", "200ms", "--json"]).stdout)
        assert [k["node"] for k in f["links"]] == ["beta"] and f["links"][0]["state"] == "up", f["links"]
        assert "LINKS 1" in alpha.run(["top", "--iterations", "1", "--interval", "200ms"]).stdout
        # beta goes: alpha shows the link down, and --all still lists it.
        stop_all()
        procs.clear()
        beta.stop()
        daemons.remove(beta)
        assert eventually(lambda: any(k["node"] == "beta" and k["state"] == "down"
                                      for k in alpha.json(["links"])["links"])), alpha.json(["links"])
        assert "1 link up" not in alpha.run(["links"]).stdout

        # ---- lanes: two agents on alpha (lanes on by default) ----
        lsub = alpha.spawn([test_agent, "serve", "lane.t", "--name", "lane-sub", "--no-reply"])
        procs.append(lsub)
        assert lsub.stdout.readline().strip() == "ready"
        lpub = alpha.spawn([fault_agent, "pub", "lane.t", "--count", "200", "--name", "lane-pub", "--size", "16"])
        procs.append(lpub)
        assert lpub.stdout.readline().strip() == "published 200"

        def lane():
            ls = alpha.json(["lanes"])["lanes"]
            if len(ls) != 1:
                return None
            names = {x["name"] for x in ls[0]["agents"]}
            moved = ls[0]["a_to_b"]["messages"] + ls[0]["b_to_a"]["messages"]
            # Every message reached lane-sub once: over the lane, or through busd before it.
            via_busd = {x["name"]: x for x in alpha.json(["agents"])["agents"]}["lane-sub"]["messages_out"]
            return ls[0] if names == {"lane-sub", "lane-pub"} and moved + via_busd == 200 else None
        ln = eventually(lane)
        assert ln, alpha.json(["lanes"])
        assert ln["state"] == "open", ln
        header, rows = table(alpha.run(["lanes"]).stdout, "LANE")
        assert len(rows) == 1 and rows[0][0] == str(ln["id"]), rows
        stop_all()
        procs.clear()
        assert eventually(lambda: alpha.json(["lanes"])["lanes"] == []), alpha.json(["lanes"])
        every = json.loads(alpha.run(["lanes", "--all", "--json"]).stdout)["lanes"]
        assert [(x["id"], x["state"]) for x in every] == [(ln["id"], "closed")], every
        alpha.stop()
        daemons.remove(alpha)
    finally:
        stop_all()
        for b in daemons:
            b.proc.kill()
            b.proc.wait()

    # ================= config check =================
    good = os.path.join(d, "good.toml")
    with open(good, "w") as f:
        f.write('[busd]\nlanes = false\n[limits]\nmax_agents = 64\n')
    bad = os.path.join(d, "bad.toml")
    with open(bad, "w") as f:
        f.write('[busd]\nlanes = false\n[limits]\nmax_agent = 64\n')
    env = {k: v for k, v in os.environ.items()}

    def ctl(args, rc):
        r = subprocess.run([busctl] + args, capture_output=True, text=True, timeout=10, env=env)
        assert r.returncode == rc, f"busctl {args}: exit {r.returncode}, wanted {rc}\n{r.stdout}\n{r.stderr}"
        return r
    assert ctl(["config", "check", good], 0).stdout == f"{good}: OK\n"
    r = ctl(["config", "check", bad], 6)
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r
    assert "bad.toml:4" in r.stderr and "max_agent" in r.stderr and "max_agents" in r.stderr, r.stderr
    r = ctl(["config", "check", os.path.join(d, "missing.toml")], 6)
    assert "missing.toml" in r.stderr, r.stderr
    ctl(["config", "check"], 2)
    ctl(["config"], 2)

    # ================= completion =================
    script = ctl(["completion", "bash"], 0).stdout
    path = os.path.join(d, "busctl.bash")
    with open(path, "w") as f:
        f.write(script)
    subprocess.run(["bash", "-n", path], check=True, timeout=10)
    ctl(["completion"], 2)

    def complete(line):
        words = line.split(" ")
        prog = (f'source "{path}"; COMP_WORDS=({" ".join(repr(w) for w in words)}); '
                f'COMP_CWORD={len(words) - 1}; _busctl; printf "%s\\n" "${{COMPREPLY[@]}}"')
        r = subprocess.run(["bash", "-c", prog], capture_output=True, text=True, timeout=10, cwd=d, check=True)
        return set(r.stdout.split())
    top_level = complete("busctl ")
    assert {"status", "stat", "agents", "subjects", "links", "lanes", "top", "pub", "sub", "req", "config",
            "completion"} <= top_level, top_level
    assert complete("busctl config ") == {"check"}
    assert complete("busctl top --i") == {"--interval", "--iterations"}
    assert {"--json", "--all", "--help", "--socket", "--counters"} <= complete("busctl links --"), complete("busctl links --")
    assert {"--count", "--timeout", "--queue", "--reply", "--schema", "--type", "--name"} <= complete("busctl sub --")
    assert "good.toml" in complete("busctl config check go")
    assert "good.toml" in complete("busctl pub --schema go")
    assert complete("busctl req --timeout ") == set()

print("busctl ops: ok")
