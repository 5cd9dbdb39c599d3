#!/usr/bin/env python3
"""busctl stat / agents / lanes against a counters page written by counters_fixture (a stand-in busd):
the JSON parses and holds the written numbers, the tables come out, the lookup beside the socket
works, and the exit codes are 0 (live), 1 (not running / no page / bad page), 2 (usage)."""
import json
import os
import subprocess
import sys
import tempfile

busctl, fixture = sys.argv[1], sys.argv[2]
GLOBALS = ["agents_connected", "agents_total", "agents_died", "messages_in", "messages_out",
           "bytes_in", "bytes_out", "verify_failures", "published_no_subscribers",
           "drops_slow_consumer", "drops_acl", "drops_too_large", "requests", "no_responders",
           "request_timeouts", "control_errors", "limit_hits", "config_reloads",
           "config_reload_failures", "links_up", "link_connects", "link_disconnects",
           "link_refused", "link_messages_out", "link_messages_in", "link_bytes_out",
           "link_bytes_in", "link_drops_held_full", "link_drops_no_route", "lanes_open",
           "lanes_opened", "lanes_closed", "lane_routes", "lane_table_full", "link_retransmits",
           "link_naks", "link_datagrams_corrupt", "link_datagrams_dropped",
           "slow_drops_oldest", "slow_drops_newest", "slow_disconnects", "slow_events", "slow_waiting_bytes"]


def env_without_lookup(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("BUS_SOCKET", "XDG_RUNTIME_DIR")}
    env.update(extra)
    return env


def run(args, env=None, rc=0):
    r = subprocess.run([busctl] + args, capture_output=True, text=True, timeout=30,
                       env=env if env is not None else env_without_lookup())
    assert r.returncode == rc, f"busctl {args}: exit {r.returncode}, wanted {rc}\n{r.stdout}\n{r.stderr}"
    return r


def bucket_bounds(v):
    """The counters page's histogram bucket holding v (bus/counters.hpp hist_bucket): (low, high)."""
    if v < 4:
        return v, v
    e = v.bit_length() - 1
    low = (4 + ((v >> (e - 2)) & 3)) << (e - 2)
    return low, low + (1 << (e - 2)) - 1


def json_of(out):
    # What scripts would do: python3 -m json.tool accepts it, and it loads.
    subprocess.run([sys.executable, "-m", "json.tool"], input=out, text=True, check=True,
                   capture_output=True)
    return json.loads(out)


with tempfile.TemporaryDirectory() as d:
    page = os.path.join(d, "busd.counters")
    fx = subprocess.Popen([fixture, page], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert fx.stdout.readline().strip() == "ready"

        # ---- stat --json ----
        s = json_of(run(["--counters", page, "stat", "--json"]).stdout)
        assert s["live"] is True and s["pid_alive"] is True, s
        assert s["pid"] == fx.pid, s
        assert s["page"] == page and s["layout_version"] == 1, s
        assert s["max_agents"] == 8 and s["max_patterns"] == 16 and s["max_lanes"] == 4, s
        assert s["agents_listed"] == 2 and s["patterns_listed"] == 1 and s["lanes_listed"] == 1, s
        assert s["heartbeat_age_ns"] < 3e9 and s["busd_version"], s
        c = s["counters"]
        assert list(c) == GLOBALS, list(c)
        for i, name in enumerate(GLOBALS):
            want = {"messages_in": 1234567, "bytes_in": 987654321}.get(name, 1000 * (i + 1) + i)
            assert c[name] == want, (name, c[name], want)

        # ---- latency: the fixture's 1..10 µs, and one 85 µs echo ----
        lat = s["latency"]
        assert list(lat) == ["request_reply", "link_rtt"], lat
        rr = lat["request_reply"]
        values = [us * 1000 for us in range(1, 11)]
        assert (rr["count"], rr["mean_ns"], rr["max_ns"]) == (10, 5500, 10000), rr
        # A quantile is its bucket's upper bound, capped at the max.
        for key, rank in (("p50_ns", 5), ("p90_ns", 9), ("p99_ns", 10), ("p999_ns", 10)):
            assert rr[key] == min(bucket_bounds(values[rank - 1])[1], 10000), (key, rr)
        want = {}
        for v in values:
            want[bucket_bounds(v)] = want.get(bucket_bounds(v), 0) + 1
        assert [(lo, hi, n) for lo, hi, n in rr["buckets"]] == [(lo, hi, n) for (lo, hi), n in sorted(want.items())], rr
        assert lat["link_rtt"]["count"] == 1 and lat["link_rtt"]["p50_ns"] == 85000, lat
        t = run(["--counters", page, "stat"]).stdout
        row = next(l for l in t.splitlines() if l.startswith("request_reply "))
        assert row.split()[:7] == ["request_reply", "10", "5.1µs", "10.0µs", "10.0µs", "10.0µs",
                                   "10.0µs"], row

        # ---- links: the RDMA one with its queue-pair figures ----
        k = json_of(run(["--counters", page, "links", "--json"]).stdout)["links"]
        assert [(x["node"], x["kind"], x["state"]) for x in k] == [("beta", "tcp", "up"), ("delta", "rdma", "down")], k
        assert "rdma" not in k[0], k[0]
        assert k[1]["rdma"] == {"doorbells": 250, "credit_stalls": 7, "queue_stalls": 2, "completion_errors": 1}, k[1]
        t = run(["--counters", page, "links"]).stdout
        header = t.splitlines()[2].split()
        assert header[-3:] == ["DOORBELLS", "STALLS", "WC_ERRORS"], header
        rows_ = {l.split()[0]: l.split() for l in t.splitlines()[3:] if l.strip()}
        assert rows_["beta"][-3:] == ["-", "-", "-"] and rows_["delta"][-3:] == ["250", "9", "1"], rows_

        # The global option after the subcommand works too.
        assert json_of(run(["stat", "--json", "--counters", page]).stdout)["counters"] == c

        # ---- agents --json ----
        a = json_of(run(["--counters", page, "agents", "--json"]).stdout)
        assert a["live"] is True and a["pid"] == fx.pid, a
        rows = {r["id"]: r for r in a["agents"]}
        assert sorted(rows) == [7, 9], rows  # agent 11 was closed
        p = rows[7]
        assert p["name"] == "planner" and p["state"] == "active" and p["pid"] == fx.pid, p
        assert p["uid"] == os.getuid() and p["gid"] == os.getgid(), p
        assert (p["messages_in"], p["messages_out"], p["bytes_in"], p["bytes_out"]) == (100, 200, 3000, 4000), p
        assert p["drops"] == {"slow_consumer": 1, "acl": 2, "too_large": 3, "verify": 4, "total": 10}, p
        assert (p["subscriptions"], p["pending_requests"]) == (5, 6), p
        assert (p["inbound_high_water"], p["outbound_high_water"]) == (7000, 8000), p
        w = rows[9]
        assert w["name"] == 'worker "q" caf\u00e9' and w["state"] == "dead", w
        assert (w["pid"], w["uid"], w["gid"], w["messages_in"], w["bytes_in"]) == (4242, 1001, 1002, 1, 10), w

        # ---- lanes --json: open ones; --all adds the closed one ----
        lanes = json_of(run(["--counters", page, "lanes", "--json"]).stdout)
        assert lanes["live"] is True and lanes["pid"] == fx.pid and lanes["max_lanes"] == 4, lanes
        assert lanes["lane_table_full"] == c["lane_table_full"], lanes
        assert [r["id"] for r in lanes["lanes"]] == [3], lanes
        ln = lanes["lanes"][0]
        assert ln["state"] == "open" and ln["agents"] == [
            {"id": 7, "name": "planner"}, {"id": 9, "name": 'worker "q" caf\u00e9'}], ln
        assert ln["a_to_b"] == {"messages": 1500, "bytes": 2000000, "would_block": 2}, ln
        assert ln["b_to_a"] == {"messages": 1499, "bytes": 64000, "would_block": 0}, ln
        assert ln["opened_ns"] > 0 and ln["generation"] % 2 == 0, ln
        every = json_of(run(["--counters", page, "lanes", "--all", "--json"]).stdout)["lanes"]
        assert [(r["id"], r["state"]) for r in every] == [(3, "open"), (4, "closed")], every
        assert every[1]["a_to_b"]["messages"] == 5 and every[1]["agents"][1]["name"] == "gone", every

        # ---- tables for humans ----
        t = run(["--counters", page, "stat"]).stdout
        assert "live" in t and f"pid {fx.pid}" in t, t
        lines = {l.split()[0]: l.split()[1] for l in t.splitlines()[3:] if l.strip()}
        assert lines["messages_in"] == "1.2M" and lines["bytes_in"] == "942MiB", lines
        assert lines["agents_connected"] == "1.0k", lines
        t = run(["--counters", page, "agents"]).stdout
        header = t.splitlines()[2]
        assert header.split() == ["ID", "NAME", "STATE", "PID", "UID", "SUBS", "MSGS_IN", "MSGS_OUT",
                                  "BYTES_IN", "BYTES_OUT", "DROPS", "PENDING", "IN_HWM", "OUT_HWM"], header
        planner = next(l for l in t.splitlines() if " planner " in l).split()
        assert planner[:3] == ["7", "planner", "active"] and planner[-3:] == ["6", "6.8KiB", "7.8KiB"], planner
        assert 'worker "q" caf\u00e9' in t and "dead" in t, t
        t = run(["--counters", page, "lanes"]).stdout
        assert "1 lane open" in t and "lane table full" in t, t
        header = t.splitlines()[2]
        assert header.split() == ["LANE", "AGENTS", "MSGS_AB", "BYTES_AB", "BLOCKED_AB", "MSGS_BA",
                                  "BYTES_BA", "BLOCKED_BA", "AGE"], header
        row = t.splitlines()[3]
        assert 'planner(7) \u2192 worker "q" caf\u00e9(9)' in row, row
        assert row.split()[-7:-1] == ["1.5k", "1.9MiB", "2", "1.5k", "62.5KiB", "0"], row
        assert "gone" not in t, t
        t = run(["--counters", page, "lanes", "--all"]).stdout
        assert "1 lane open, 1 closed" in t and "STATE" in t.splitlines()[2], t
        assert "gone(11)" in t and "closed" in t, t

        # ---- found beside the socket: $BUS_SOCKET, then $XDG_RUNTIME_DIR ----
        sock = os.path.join(d, "busd.sock")
        s = json_of(run(["stat", "--json"], env=env_without_lookup(BUS_SOCKET=sock)).stdout)
        assert s["page"] == page, s
        s = json_of(run(["agents", "--json"], env=env_without_lookup(XDG_RUNTIME_DIR=d)).stdout)
        assert s["page"] == page, s
    finally:
        fx.stdin.close()
        assert fx.wait(timeout=30) == 0
    assert not os.path.exists(page), "a clean stop removes the page"

    # ---- not running: exit 1, and the message names the paths tried ----
    r = run(["--counters", page, "stat"], rc=1)
    assert page in r.stderr and "not running" in r.stderr, r.stderr
    r = run(["agents"], env=env_without_lookup(BUS_SOCKET=os.path.join(d, "none.sock")), rc=1)
    assert os.path.join(d, "none.counters") in r.stderr, r.stderr
    if not os.path.exists("/run/busd/busd.counters"):
        r = run(["stat"], env=env_without_lookup(XDG_RUNTIME_DIR=d), rc=1)
        assert os.path.join(d, "busd.counters") in r.stderr and "/run/busd/busd.counters" in r.stderr, r.stderr

    # ---- a page left by a busd that died: shown, but exit 1 ----
    stale = os.path.join(d, "stale.counters")
    out = subprocess.run([fixture, stale, "--leave"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "ready", out
    r = run(["--counters", stale, "stat", "--json"], rc=1)
    s = json_of(r.stdout)
    assert s["live"] is False and s["pid_alive"] is False and s["heartbeat_age_ns"] > 50e9, s
    assert s["counters"]["messages_in"] == 1234567, s
    assert "not running" in r.stderr, r.stderr
    r = run(["--counters", stale, "agents"], rc=1)
    assert "NOT RUNNING" in r.stdout and "planner" in r.stdout, r.stdout
    r = run(["--counters", stale, "lanes"], rc=1)
    assert "NOT RUNNING" in r.stdout and "planner(7)" in r.stdout, r.stdout

    # A fresh heartbeat but the pid is gone: died a moment ago, not running.
    crashed = os.path.join(d, "crashed.counters")
    out = subprocess.run([fixture, crashed, "--crash"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "ready", out
    s = json_of(run(["--counters", crashed, "stat", "--json"], rc=1).stdout)
    assert s["live"] is False and s["pid_alive"] is False and s["heartbeat_age_ns"] < 3e9, s

    # ---- not a page: exit 1 with the reason ----
    junk = os.path.join(d, "junk.counters")
    with open(junk, "wb") as f:
        f.write(b"y" * 4096)
    r = run(["--counters", junk, "stat"], rc=1)
    assert "not a busd counters page" in r.stderr and junk in r.stderr, r.stderr

    # ---- usage: exit 2; help: 0 ----
    run([], rc=2)
    run(["stat", "--bogus"], rc=2)
    run(["agents", "--all"], rc=2)  # lanes only
    run(["nosuchcommand"], rc=2)
    run(["--counters"], rc=2)
    assert "stat" in run(["--help"]).stdout and "lanes" in run(["--help"]).stdout

print("busctl counters: ok")
