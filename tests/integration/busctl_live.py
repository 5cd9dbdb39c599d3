#!/usr/bin/env python3
"""busctl stat / agents against a live busd: three agent processes (a subscriber, a publisher that
sent 25 messages, an idle one) are listed with their names, pids and exact message counts; the
global counters agree; an agent that exits disappears from `busctl agents`.
Usage: busctl_live.py BUSCTL BUSD TEST_AGENT FAULT_AGENT"""
import os
import signal
import subprocess
import sys
import tempfile
import time
import bustest  # noqa: E402  (this directory)
from bustest import accepts, env_for, eventually  # noqa: E402

busctl, busd, test_agent, fault_agent = sys.argv[1:5]
N = 25






with tempfile.TemporaryDirectory(prefix="busctl-live-") as d:
    sock = os.path.join(d, "busd.sock")
    env = env_for(sock)
    log = open(os.path.join(d, "busd.log"), "w")
    # Through busd (no lanes): this test reads busd's own per-agent message counts.
    conf = os.path.join(d, "busd.toml")
    with open(conf, "w") as f:
        f.write("[busd]\nlanes = false\n")
    daemon = subprocess.Popen([busd, "--config", conf], env=env, stdout=log, stderr=subprocess.STDOUT)
    agents = {}

    def busctl_json(cmd):
        return bustest.busctl_json(busctl, env, cmd)

    def rows():
        return {a["name"]: a for a in busctl_json("agents")["agents"]}

    def start(name, argv, wait_for):
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = p.stdout.readline().strip()
        assert line == wait_for, f"{name}: wanted {wait_for!r}, got {line!r}"
        agents[name] = p
        return p

    try:
        assert eventually(lambda: accepts(sock), 5), "busd did not start"
        start("live-sub", [test_agent, "serve", "live.topic", "--name", "live-sub", "--no-reply"], "ready")
        start("live-idle", [test_agent, "idle", "--name", "live-idle"], "ready")
        start("live-pub", [fault_agent, "pub", "live.topic", "--count", str(N), "--name", "live-pub",
                           "--size", "32"], f"published {N}")

        # Deliveries are counted when busd routes them: wait for the last one.
        assert eventually(lambda: rows().get("live-sub", {}).get("messages_out") == N), rows()
        time.sleep(0.2)  # nothing more may arrive
        a = busctl_json("agents")
        assert a["live"] is True and a["pid"] == daemon.pid, a
        r = {x["name"]: x for x in a["agents"]}
        assert sorted(r) == ["live-idle", "live-pub", "live-sub"], sorted(r)
        for name, x in r.items():
            assert x["state"] == "active" and x["pid"] == agents[name].pid, x
            assert x["uid"] == os.getuid(), x
            assert x["drops"]["total"] == 0 and x["pending_requests"] == 0, x
        pub, sub, idle = r["live-pub"], r["live-sub"], r["live-idle"]
        assert (pub["messages_in"], pub["messages_out"], pub["subscriptions"]) == (N, 0, 0), pub
        assert (sub["messages_in"], sub["messages_out"], sub["subscriptions"]) == (0, N, 1), sub
        assert (idle["messages_in"], idle["messages_out"], idle["subscriptions"]) == (0, 0, 0), idle
        assert pub["bytes_in"] == sub["bytes_out"] and pub["bytes_in"] > N * 32, (pub, sub)
        assert len({x["id"] for x in r.values()}) == 3, r

        s = busctl_json("stat")
        assert s["live"] is True and s["pid"] == daemon.pid and s["pid_alive"] is True, s
        assert s["agents_listed"] == 3 and s["patterns_listed"] == 1, s
        c = s["counters"]
        assert (c["agents_connected"], c["agents_total"], c["agents_died"]) == (3, 3, 0), c
        assert (c["messages_in"], c["messages_out"]) == (N, N), c
        assert c["bytes_in"] == pub["bytes_in"] and c["bytes_out"] == sub["bytes_out"], c
        assert c["verify_failures"] == 0 and c["drops_acl"] == 0, c

        # One agent exits: gone from the list, the others stay.
        p = agents.pop("live-idle")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
        assert eventually(lambda: "live-idle" not in rows(), 5), rows()
        assert sorted(rows()) == ["live-pub", "live-sub"], rows()
        c = busctl_json("stat")["counters"]
        assert (c["agents_connected"], c["agents_total"]) == (2, 3), c
        # The human table agrees.
        t = subprocess.run([busctl, "agents"], env=env, capture_output=True, text=True, timeout=10)
        assert t.returncode == 0 and "live-pub" in t.stdout and "live-idle" not in t.stdout, t.stdout
    finally:
        for p in agents.values():
            p.send_signal(signal.SIGTERM)
        for p in agents.values():
            p.wait(timeout=10)
        daemon.send_signal(signal.SIGTERM)
        rc = daemon.wait(timeout=10)
        log.close()
    assert rc == 0, f"busd exited {rc}"
    assert not os.path.exists(os.path.join(d, "busd.counters")), "a clean stop removes the page"

print("busctl live: ok")
