#!/usr/bin/env python3
"""busd's Prometheus endpoint ([busd] metrics_listen) against a live busd (about 7 s):

  * busd "alpha" with metrics_listen, a link to a second busd "beta", three agents (a subscriber
    whose name needs escaping, a publisher that sends N messages, an idle one);
  * /metrics parses strictly (every family has one HELP and one TYPE before its samples, counters
    end in _total, no series twice, label values escaped) and with prometheus_client's parser;
  * busd_messages_in_total is N, what the publisher sent and `busctl stat --json` says; every
    global equals busctl's; the per-agent series equal `busctl agents --json`; the link to beta
    is up with its node, address and kind, and shows an RTT; after a reload with lanes on, a lane
    between two agents shows with its direction and agents;
  * 404 for another path, 405 (Allow: GET, HEAD) for another method, HEAD, 400, 431 for a huge
    head, 408 for a client that sends nothing (while it waits, scrapes still work);
  * `promtool check metrics` when promtool is installed (else says so);
  * the Grafana dashboard's expressions use only metrics and labels this scrape has;
  * a busd without metrics_listen opens no TCP port; a busy port is one clear error at start.
Usage: metrics_scrape.py BUSD BUSCTL TEST_AGENT FAULT_AGENT DASHBOARD"""
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import bustest  # noqa: E402  (this directory)
from bustest import PrivateBusd, env_for, eventually, free_port  # noqa: E402

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    # Debian's python3-prometheus-client is installed for /usr/bin/python3; a python3 earlier
    # on PATH (pyenv, a venv) may not see it.
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("SKIP: prometheus_client is missing (deploy/install-deps.sh installs python3-prometheus-client)")
    sys.exit(77)

busd, busctl, test_agent, fault_agent, dashboard = sys.argv[1:6]
sys.path.insert(0, os.path.dirname(os.path.abspath(dashboard)))
import check_dashboard  # noqa: E402  (deploy/grafana/check_dashboard.py)

N = 40
SUB_NAME = 'sub"q\\x'  # a quote and a backslash: both escaped in label values






def http(port, request, timeout=10.0):
    """Sends raw bytes, returns (status, headers dict, body bytes) of the answer read to EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return status, headers, body


def scrape(port):
    status, headers, body = http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n")
    assert status == 200, (status, body[:200])
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8", headers
    assert headers["connection"] == "close", headers
    assert int(headers["content-length"]) == len(body), (headers, len(body))
    return body.decode("utf-8")


# ---- a strict reading of the text format 0.0.4 -------------------------------------------------

NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def parse_labels(text, line):
    labels, i = {}, 0
    while i < len(text):
        eq = text.index("=", i)
        name = text[i:eq]
        assert LABEL_NAME.match(name) and not name.startswith("__"), (name, line)
        assert text[eq + 1] == '"', line
        j, value = eq + 2, []
        while text[j] != '"':
            if text[j] == "\\":
                esc = text[j + 1]
                assert esc in '\\"n', f"bad escape \\{esc} in {line!r}"
                value.append({"\\": "\\", '"': '"', "n": "\n"}[esc])
                j += 2
            else:
                assert text[j] != "\n", line
                value.append(text[j])
                j += 1
        assert name not in labels, f"label {name} twice: {line!r}"
        labels[name] = "".join(value)
        i = j + 1
        if i < len(text):
            assert text[i] == ",", line
            i += 1
    return labels


def parse_strict(text):
    """{family: {"type", "help", "samples": {frozenset(labels.items()): value}}}, asserting the rules."""
    assert text.endswith("\n"), "the text ends with a line feed"
    fams, order, current = {}, [], None
    for line in text[:-1].split("\n"):
        assert line, "no empty lines"
        if line.startswith("# HELP "):
            name, _, help_ = line[7:].partition(" ")
            assert NAME.match(name) and name not in fams, f"HELP for {name} twice or bad name"
            assert help_.strip(), f"{name}: empty HELP"
            fams[name] = {"help": help_, "type": None, "samples": {}}
            order.append(name)
            current = name
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name == current and fams[name]["type"] is None, f"TYPE {name} not right after its HELP"
            assert kind in ("counter", "gauge", "histogram"), line
            if kind == "counter":
                assert name.endswith("_total"), f"counter {name} without _total"
            elif kind == "histogram":
                assert name.endswith("_seconds"), f"histogram {name} not in seconds"
            else:
                assert not name.endswith("_total"), f"gauge {name} ends in _total"
            assert name.startswith("busd_"), name
            fams[name]["type"] = kind
        else:
            assert not line.startswith("#"), f"unexpected comment {line!r}"
            m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)\Z", line)
            assert m, f"not a sample: {line!r}"
            name = m.group(1)
            labels = parse_labels(m.group(3) or "", line)
            if current and fams[current]["type"] == "histogram":
                # name_bucket{le=...}, name_sum, name_count: kept under the family, the sample
                # name as a pseudo-label (cross_check takes it back out).
                suffix = name[len(current):] if name.startswith(current) else None
                assert suffix in ("_bucket", "_sum", "_count"), f"sample of {name} outside its family: {line!r}"
                assert ("le" in labels) == (suffix == "_bucket"), f"le only on buckets: {line!r}"
                labels["__sample__"] = name
                name = current
            assert name == current and fams[name]["type"], f"sample of {name} outside its family: {line!r}"
            value = float(m.group(4))
            if fams[name]["type"] == "counter":
                assert value >= 0, line
            key = frozenset(labels.items())
            assert key not in fams[name]["samples"], f"series twice: {line!r}"
            fams[name]["samples"][key] = value
    for name, f in fams.items():
        assert f["type"], f"{name} has no TYPE"
        if f["type"] == "histogram":
            check_histogram(name, f)
    return fams


def check_histogram(name, f):
    """Buckets cumulative along increasing le, ending in +Inf equal to _count; a _sum."""
    buckets, count, total = [], None, None
    for k, v in f["samples"].items():
        d = dict(k)
        sample = d.pop("__sample__")
        if sample.endswith("_bucket"):
            buckets.append((float(d["le"]), v))
        elif sample.endswith("_count"):
            count = v
        else:
            total = v
    assert count is not None and total is not None and total >= 0, f"{name}: _count and _sum"
    buckets.sort()
    assert buckets and buckets[-1][0] == float("inf"), f"{name}: no +Inf bucket"
    assert buckets[-1][1] == count, f"{name}: +Inf bucket {buckets[-1][1]} != _count {count}"
    for (_, a), (_, b) in zip(buckets, buckets[1:]):
        assert a <= b, f"{name}: buckets not cumulative {buckets}"


def histogram_count(fams, name):
    return next(v for k, v in fams[name]["samples"].items() if dict(k)["__sample__"] == name + "_count")


def value(fams, name, **labels):
    key = frozenset(labels.items())
    s = fams[name]["samples"]
    assert key in s, f"{name}{labels} missing; have {sorted(dict(k) for k in s)[:5] if s else 'none'}"
    return s[key]


def series(fams, name):
    return [(dict(k), v) for k, v in fams[name]["samples"].items()]


def cross_check(text, fams):
    """prometheus_client reads the same families, samples and values."""
    seen = {}
    for fam in text_string_to_metric_families(text):
        assert fam.documentation, f"{fam.name}: no HELP"
        assert fam.type in ("counter", "gauge", "histogram"), (fam.name, fam.type)
        for s in fam.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in seen, f"prometheus_client saw {key} twice"
            seen[key] = s.value
    mine = {}
    for n, f in fams.items():
        for k, v in f["samples"].items():
            d = dict(k)
            mine[(d.pop("__sample__", n), frozenset(d.items()))] = v
    assert seen == mine, set(seen) ^ set(mine)
    return len(seen)


def tcp_listening_ports(pid):
    """Ports of the listening TCP sockets process `pid` holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as f:
            next(f)
            for row in f:
                cols = row.split()
                if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                    ports.append(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


with tempfile.TemporaryDirectory(prefix="metrics-scrape-") as d:
    mport, aport, bport = free_port(), free_port(), free_port()
    while len({mport, aport, bport}) < 3:
        bport = free_port()
    procs = []

    def start_busd(name, text):
        b = PrivateBusd(busd, d, name, text)
        procs.append(b.proc)
        return b.proc, b.sock, b.conf

    def busctl_json(sock, cmd):
        return bustest.busctl_json(busctl, env_for(sock), cmd)

    def agent(sock, argv, wait_for):
        p = subprocess.Popen(argv, env=env_for(sock), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(p)
        line = p.stdout.readline().strip()
        assert line == wait_for, f"{argv}: wanted {wait_for!r}, got {line!r}"
        return p

    try:
        # ---- two busd, linked; alpha serves metrics (a port alone: loopback) ----
        beta, beta_sock, _ = start_busd("beta", f'[cluster]\nname = "m"\nnode = "beta"\nlisten = "127.0.0.1:{bport}"\n')
        alpha_conf_text = (f'[busd]\nlanes = false\nmetrics_listen = ":{mport}"\n'
                           f'[cluster]\nname = "m"\nnode = "alpha"\nlisten = "127.0.0.1:{aport}"\n'
                           f'[[links]]\nkind = "tcp"\npeer = "127.0.0.1:{bport}"\n')
        alpha, sock, alpha_conf = start_busd("alpha", alpha_conf_text)
        alpha_log = os.path.join(d, "alpha", "busd.log")
        assert f"event=metrics_listening address=127.0.0.1:{mport} path=/metrics" in open(alpha_log).read(), \
            open(alpha_log).read()
        assert sorted(tcp_listening_ports(alpha.pid)) == sorted([mport, aport]), tcp_listening_ports(alpha.pid)

        agent(sock, [test_agent, "serve", "m.topic", "--name", SUB_NAME, "--no-reply"], "ready")
        agent(sock, [test_agent, "idle", "--name", "m-idle"], "ready")
        agent(sock, [fault_agent, "pub", "m.topic", "--count", str(N), "--name", "m-pub", "--size", "48"],
              f"published {N}")

        def rows():
            return {a["name"]: a for a in busctl_json(sock, "agents")["agents"]}
        assert eventually(lambda: rows().get(SUB_NAME, {}).get("messages_out") == N), rows()

        def peer_ready():
            f = parse_strict(scrape(mport))
            s = series(f, "busd_peer_up")
            return f if s and s[0][1] == 1 and series(f, "busd_peer_rtt_seconds") else None
        assert eventually(peer_ready, 10), scrape(mport)
        time.sleep(0.6)  # a timer tick: the link's gauges settle

        # ---- the scrape: strict, and as prometheus_client reads it ----
        text = scrape(mport)
        stat = busctl_json(sock, "stat")
        agents = busctl_json(sock, "agents")
        fams = parse_strict(text)
        n_series = cross_check(text, fams)
        with open(os.path.join(d, "scrape.txt"), "w") as f:
            f.write(text)

        # ---- process series ----
        assert value(fams, "busd_up") == 1
        info = series(fams, "busd_info")
        assert len(info) == 1 and info[0][1] == 1 and info[0][0]["version"] == stat["busd_version"], info
        assert abs(value(fams, "busd_start_time_seconds") - time.time()) < 120, value(fams, "busd_start_time_seconds")
        assert 0 <= value(fams, "busd_heartbeat_age_seconds") < 3

        # ---- globals: every one, as busctl reads them; types from the GlobalInfo table ----
        c = stat["counters"]
        assert c["messages_in"] == N and value(fams, "busd_messages_in_total") == N, c
        assert value(fams, "busd_messages_out_total") == N and c["messages_out"] == N, c
        gauges = {"agents_connected", "links_up", "lanes_open", "slow_waiting_bytes"}
        for name, v in c.items():
            metric = "busd_" + name + ("" if name in gauges or name.endswith("_total") else "_total")
            assert metric in fams, f"{name}: no {metric}"
            assert fams[metric]["type"] == ("gauge" if name in gauges else "counter"), (metric, fams[metric]["type"])
            assert value(fams, metric) == v, (metric, value(fams, metric), v)
        assert value(fams, "busd_agents_connected") == 3 and value(fams, "busd_links_up") == 1

        # ---- per agent, as `busctl agents --json` ----
        listed = agents["agents"]
        assert sorted(a["name"] for a in listed) == sorted([SUB_NAME, "m-pub", "m-idle"]), listed
        assert len(series(fams, "busd_agent_messages_in_total")) == 3
        for a in listed:
            lab = {"agent": a["name"], "id": str(a["id"])}
            for key in ("messages_in", "messages_out", "bytes_in", "bytes_out"):
                assert value(fams, f"busd_agent_{key}_total", **lab) == a[key], (a["name"], key)
            for cause in ("slow_consumer", "acl", "too_large", "verify"):
                assert value(fams, "busd_agent_drops_total", cause=cause, **lab) == a["drops"][cause]
            assert value(fams, "busd_agent_subscriptions", **lab) == a["subscriptions"]
            assert value(fams, "busd_agent_pending_requests", **lab) == a["pending_requests"]
            assert value(fams, "busd_agent_inbound_high_water_bytes", **lab) == a["inbound_high_water"]
            assert value(fams, "busd_agent_outbound_high_water_bytes", **lab) == a["outbound_high_water"]
            assert value(fams, "busd_agent_dead", **lab) == 0
            # Sampled about once a second by busd: present, not compared (busctl reads another moment).
            for metric in ("inbound_queued_bytes", "outbound_queued_bytes", "slow_waiting_bytes"):
                assert value(fams, f"busd_agent_{metric}", **lab) >= 0
        pub = next(a for a in listed if a["name"] == "m-pub")
        assert pub["messages_in"] == N and value(fams, "busd_agent_bytes_in_total", agent="m-pub", id=str(pub["id"])) > N * 48
        assert f'agent="sub\\"q\\\\x"' in text, "quote and backslash escaped in the label value"

        # ---- per pattern ----
        assert value(fams, "busd_pattern_subscribers", pattern="m.topic") == 1
        assert value(fams, "busd_pattern_messages_total", pattern="m.topic") == N

        # ---- per link: node, address, kind ----
        peer = {"node": "beta", "address": f"127.0.0.1:{bport}", "kind": "tcp"}
        assert value(fams, "busd_peer_up", **peer) == 1
        assert value(fams, "busd_peer_connects_total", **peer) >= 1
        assert 0 < value(fams, "busd_peer_rtt_seconds", **peer) < 1, series(fams, "busd_peer_rtt_seconds")
        for name in ("busd_peer_retransmits_total", "busd_peer_naks_total", "busd_peer_held_bytes",
                     "busd_peer_messages_in_total", "busd_peer_messages_out_total"):
            assert value(fams, name, **peer) >= 0
        assert value(fams, "busd_peer_drops_total", cause="held_full", **peer) == 0

        # ---- latency histograms: the link's heartbeat echoes are in link_rtt ----
        assert fams["busd_link_rtt_seconds"]["type"] == "histogram"
        assert histogram_count(fams, "busd_link_rtt_seconds") >= 1, fams["busd_link_rtt_seconds"]
        assert histogram_count(fams, "busd_request_reply_seconds") == 0  # no requests here
        assert stat["latency"]["link_rtt"]["count"] >= 1, stat["latency"]

        # ---- the dashboard: names and labels against this scrape ----
        with open(dashboard, encoding="utf-8") as f:
            errors = check_dashboard.check(json.load(f), check_dashboard.families_of(text))
        assert not errors, "\n".join(errors)

        # ---- promtool, when installed ----
        promtool = shutil.which("promtool")
        if promtool:
            r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, f"promtool check metrics:\n{r.stdout}\n{r.stderr}"
            print("promtool check metrics: ok")
        else:
            print("promtool not installed (Debian package prometheus): promtool check metrics not run")

        # ---- HTTP: the other answers ----
        st, h, body = http(mport, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        assert st == 404 and h["connection"] == "close", (st, h)
        st, h, body = http(mport, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        assert st == 405 and h["allow"] == "GET, HEAD", (st, h)
        st, h, body = http(mport, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert st == 200 and body == b"" and int(h["content-length"]) > 1000, (st, h, body[:100])
        st, h, body = http(mport, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n")
        assert st == 200 and b"busd_messages_in_total" in body, st
        st, _, _ = http(mport, b"garbage\r\n\r\n")
        assert st == 400, st
        st, _, _ = http(mport, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert st == 431, st

        # Garbage: answered 400 (or closed), and busd serves on.
        rnd = random.Random(7)
        for i in range(50):
            junk = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300))) + b"\r\n\r\n"
            try:
                st, _, _ = http(mport, junk)
                assert st in (400, 404, 405), (st, junk)
            except (ValueError, IndexError):
                pass  # closed without an answer
        # More idle clients than the server's 16 slots: a scraper still gets in at once (the
        # idlest connection makes room).
        idlers = [socket.create_connection(("127.0.0.1", mport), timeout=10) for _ in range(24)]
        t0 = time.monotonic()
        assert "busd_up 1" in scrape(mport)
        assert time.monotonic() - t0 < 2.0, time.monotonic() - t0
        for s_ in idlers:
            s_.close()
        assert alpha.poll() is None

        # A client that sends nothing holds a connection until the read timeout (5 s), then gets
        # 408; meanwhile scrapes are answered.
        idle = socket.create_connection(("127.0.0.1", mport), timeout=15)
        t0 = time.monotonic()
        for _ in range(3):
            assert "busd_up 1" in scrape(mport)
        idle_answer = b""
        while True:
            chunk = idle.recv(4096)
            if not chunk:
                break
            idle_answer += chunk
        waited = time.monotonic() - t0
        idle.close()
        assert idle_answer.startswith(b"HTTP/1.1 408 "), idle_answer[:100]
        assert 4.0 < waited < 9.0, waited

        # ---- a lane: reload with lanes on, two agents that talk ----
        with open(alpha_conf, "w") as f:
            f.write(alpha_conf_text.replace("lanes = false", "lanes = true"))
        alpha.send_signal(signal.SIGHUP)
        assert eventually(lambda: value(parse_strict(scrape(mport)), "busd_config_reloads_total") == 1, 5)
        agent(sock, [test_agent, "serve", "l.topic", "--name", "l-sub", "--no-reply"], "ready")
        agent(sock, [test_agent, "pub", "l.topic", "--count", "1000", "--delay-ms", "10", "--name", "l-pub"], "ready")

        def lane_counted():
            f = parse_strict(scrape(mport))
            s = [(lab, v) for lab, v in series(f, "busd_lane_messages_total") if lab["from"] == "l-pub"]
            return f if s and s[0][1] > 0 else None
        lf = eventually(lane_counted, 10)
        assert lf, scrape(mport)
        up = series(lf, "busd_lane_up")
        assert len(up) == 1 and up[0][1] == 1 and {up[0][0]["agent_a"], up[0][0]["agent_b"]} == {"l-sub", "l-pub"}, up
        lane = up[0][0]["lane"]
        dirs = {lab["direction"]: (lab["from"], lab["to"]) for lab, _ in series(lf, "busd_lane_messages_total")}
        assert dirs == {"a_to_b": (up[0][0]["agent_a"], up[0][0]["agent_b"]),
                        "b_to_a": (up[0][0]["agent_b"], up[0][0]["agent_a"])}, dirs
        assert value(lf, "busd_lanes_open") == 1
        lanes = busctl_json(sock, "lanes")["lanes"]
        assert [str(x["id"]) for x in lanes] == [lane], lanes
        print(f"scrape: {len(fams)} families, {n_series} series; lane {lane} and link to beta shown")
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert alpha.returncode == 0 and beta.returncode == 0, (alpha.returncode, beta.returncode)

    # ---- without metrics_listen: no TCP port at all ----
    os.makedirs(os.path.join(d, "plain"))
    psock = os.path.join(d, "plain", "busd.sock")
    plain = subprocess.Popen([busd], env=env_for(psock), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        assert eventually(lambda: os.path.exists(psock), 10), "busd did not start"
        assert tcp_listening_ports(plain.pid) == [], tcp_listening_ports(plain.pid)
        try:
            socket.create_connection(("127.0.0.1", mport), timeout=2).close()
            assert False, f"something still listens on {mport}"
        except ConnectionRefusedError:
            pass
    finally:
        plain.send_signal(signal.SIGTERM)
        assert plain.wait(timeout=10) == 0

    # ---- a port that is taken: one clear error, exit 1, nothing left behind ----
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        conf = os.path.join(d, "taken.toml")
        with open(conf, "w") as f:
            f.write(f'[busd]\nmetrics_listen = "127.0.0.1:{port}"\n')
        tsock = os.path.join(d, "taken", "busd.sock")
        r = subprocess.run([busd, "--config", conf], env=env_for(tsock), capture_output=True, text=True, timeout=20)
        assert r.returncode == 1, (r.returncode, r.stderr)
        err = [l for l in r.stderr.splitlines() if l.startswith("busd: ")]
        assert len(err) == 1 and "metrics_listen" in err[0] and str(port) in err[0], r.stderr
        assert not os.path.exists(tsock) and not os.path.exists(os.path.join(d, "taken", "busd.counters")), \
            os.listdir(os.path.join(d, "taken"))

    # ---- a bad value: refused with the key named ----
    with open(conf, "w") as f:
        f.write('[busd]\nmetrics_listen = "127.0.0.1:99999"\n')
    r = subprocess.run([busd, "--config", conf, "--check-config"], capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "metrics_listen" in r.stderr, (r.returncode, r.stderr)

print("metrics scrape: ok")
