#!/usr/bin/env python3
"""Why does a subscriber miss messages? Three scripted reasons, each visible in a named busctl
counter (README "Operating busd"):
  1. a drop-oldest policy under overload: the subscriber reads slowly, busd drops the oldest
     waiting messages -> `busctl stat`: slow_drops_oldest, `busctl agents`: its drops_slow_consumer;
  2. an ACL deny: the publisher may not publish there -> `busctl stat`: drops_acl, `busctl agents`:
     the publisher's drops_acl;
  3. no remote interest across a link: the subscriber on host A subscribed to something else ->
     on host B, `busctl stat`: published_no_subscribers grows, link_messages_out does not.
Each case asserts exact counts where busd can know them. About 10 s.
Usage: busctl_why_missing.py BUSCTL BUSD TEST_AGENT FAULT_AGENT"""
import signal
import subprocess
import sys
import tempfile
import time
from bustest import PrivateBusd, busctl_json, eventually, free_port  # noqa: E402  (this directory)

busctl, busd, test_agent, fault_agent = sys.argv[1:5]


class Host(PrivateBusd):
    """One busd with its own socket, config and log; agents started against it."""

    def __init__(self, root, name, config):
        super().__init__(busd, root, name, config)
        self.agents = []

    def busctl(self, cmd):
        return busctl_json(busctl, self.env, cmd)

    def counters(self):
        return self.busctl("stat")["counters"]

    def agent_rows(self):
        return {a["name"]: a for a in self.busctl("agents")["agents"]}

    def agent(self, argv, wait_for):
        p = subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = p.stdout.readline().strip()
        assert line == wait_for, f"{argv}: wanted {wait_for!r}, got {line!r}"
        self.agents.append(p)
        return p

    def close(self):
        for p in self.agents:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.agents:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=10)
        self.log.close()
        return rc


def drop_oldest(root):
    n = 20000
    h = Host(root, "slow", "[busd]\nlanes = false\n[limits]\nmax_message_size = 8192\nring_capacity = 65536\n"
                           "slow_buffer_bytes = 65536\n[[slow_consumers]]\nname = \"logger-*\"\n"
                           "subjects = [\"logs.>\"]\npolicy = \"drop-oldest\"\n")
    try:
        # logger-1 asks for nothing special; the operator's rule makes it drop-oldest. It takes
        # 20 ms per message: 20,000 messages overrun its ring and busd's buffer for it.
        h.agent([test_agent, "serve", "logs.>", "--name", "logger-1", "--no-reply", "--delay-ms", "20"], "ready")
        h.agent([fault_agent, "pub", "logs.app", "--count", str(n), "--name", "app", "--size", "64"], f"published {n}")
        assert eventually(lambda: h.counters()["messages_in"] == n), h.counters()
        c = h.counters()
        row = h.agent_rows()["logger-1"]
        print(f"drop-oldest: slow_drops_oldest {c['slow_drops_oldest']}, logger-1 drops {row['drops']}, "
              f"delivered {row['messages_out']}")
        assert c["slow_drops_oldest"] > 0, c
        assert c["slow_drops_newest"] == 0 and c["drops_acl"] == 0, c
        assert row["drops"]["slow_consumer"] == c["slow_drops_oldest"], (row, c)
        # Where its messages wait now (copied each second): its ring, and busd's buffer for it.
        assert eventually(lambda: (lambda r: r["outbound_queued"] > 0 and r["slow_waiting_bytes"] > 0)(
            h.agent_rows()["logger-1"]), 3), h.agent_rows()["logger-1"]
    finally:
        assert h.close() == 0


def acl_deny(root):
    n = 50
    h = Host(root, "acl", "[busd]\nlanes = false\nacl_owner_all = false\n"
                          "[[acl]]\nname = \"*\"\nsubscribe = [\">\"]\npublish = [\"public.>\", \"_INBOX.>\"]\n")
    try:
        h.agent([test_agent, "serve", "secret.>", "--name", "listener", "--no-reply"], "ready")
        h.agent([fault_agent, "pub", "secret.plans", "--count", str(n), "--name", "rogue", "--size", "32"],
                f"published {n}")
        assert eventually(lambda: h.counters()["drops_acl"] == n), h.counters()
        rows = h.agent_rows()
        print(f"acl: drops_acl {h.counters()['drops_acl']}, rogue drops {rows['rogue']['drops']}, "
              f"listener got {rows['listener']['messages_out']}")
        assert rows["rogue"]["drops"]["acl"] == n, rows["rogue"]
        assert rows["listener"]["messages_out"] == 0, rows["listener"]
    finally:
        assert h.close() == 0


def no_remote_interest(root):
    n = 100
    pa, pb = free_port(), free_port()
    cluster = ("[cluster]\nname = \"why\"\nnode = \"{node}\"\nlisten = \"127.0.0.1:{port}\"\nheartbeat_ms = 100\n"
               "dead_after_ms = 600\nbackoff_min_ms = 20\nbackoff_max_ms = 200\n")
    a = Host(root, "a", cluster.format(node="a", port=pa))
    b = Host(root, "b", cluster.format(node="b", port=pb) + f"[[links]]\nkind = \"tcp\"\npeer = \"127.0.0.1:{pa}\"\n")
    try:
        assert eventually(lambda: a.counters()["links_up"] == 1 and b.counters()["links_up"] == 1), b.counters()
        # On a, the subscriber wants orders.eu.>; b's publisher sends orders.us.*.
        a.agent([test_agent, "serve", "orders.eu.>", "--name", "eu-desk", "--no-reply"], "ready")
        time.sleep(0.3)  # its interest reaches b
        before = b.counters()
        b.agent([fault_agent, "pub", "orders.us.new", "--count", str(n), "--name", "us-feed", "--size", "32"],
                f"published {n}")
        assert eventually(lambda: b.counters()["messages_in"] - before["messages_in"] == n), b.counters()
        after = b.counters()
        print(f"no interest: b published_no_subscribers +{after['published_no_subscribers'] - before['published_no_subscribers']}, "
              f"link_messages_out +{after['link_messages_out'] - before['link_messages_out']}")
        assert after["published_no_subscribers"] - before["published_no_subscribers"] == n, after
        assert after["link_messages_out"] == before["link_messages_out"], after
        assert a.agent_rows()["eu-desk"]["messages_out"] == 0
    finally:
        assert b.close() == 0
        assert a.close() == 0


with tempfile.TemporaryDirectory(prefix="busctl-why-") as root:
    drop_oldest(root)
    acl_deny(root)
    no_remote_interest(root)
print("busctl why-missing: ok")
