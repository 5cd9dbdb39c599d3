#!/usr/bin/env python3
"""The soak test: 200 agents doing request/reply and pub/sub with sequence numbers while a chaos
driver kill -9s a random agent every second (and restarts it as a new incarnation) and restarts a
busd every 20 s (alternating host; kill -9 twice, then SIGTERM twice).

Hosts: as root with `ip netns`, two network namespaces joined by a veth pair, one busd each and a
TCP link between them; 150 agents on host a, 50 on host b, flows crossing the link both ways.
Otherwise one host (the reason is printed) and the remote quarter is skipped.

Flows: half the agents are 1:1 pairs on one host (a publisher and its only subscriber, a requester
and its only responder): busd gives them direct lanes. The other half go through busd: fan-out to
more subscribers than limits.max_lane_targets, a queue group of responders on both hosts, and
one-subscriber subjects whose subscriber is on the other host.

Asserted at the end (exit 1 with each failure named, 0 when all hold):
  - every reply a requester received matches its request (soak_agent checks each one);
  - per publisher incarnation, every subscriber saw its messages in order, no duplicates, intact,
    gaps only across a restart of the publisher's or the subscriber's busd (soak_agent);
  - no agent crashed, every live agent ended connected, and each agent alive across a restart of
    its busd reconnected (Disconnected, then Connected) by itself, and never disconnected otherwise;
  - resubscription: every subscriber/responder connection period of 5 s or more carried messages;
  - lanes carried most of the lane flows and none of the others;
  - busd's RSS and fd count at the end of each lifetime within 10% of their values 5 s after its
    start (agents touch their whole rings at connect time: see soak_agent --warm), the socket
    directory holds only the socket and the counters page while busd runs and nothing after a
    SIGTERM or at the end, nothing new in /dev/shm; SIGTERM stops busd with status 0.

  soak.py BUSD SOAK_AGENT BUSCTL
  env: SOAK_SECONDS (120), SOAK_AGENTS (200), SOAK_SEED (time), SOAK_KEEP=1 keeps the work
       directory, SOAK_ONE_HOST=1 forces one host.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

MS = 1_000_000
S = 1_000_000_000


def now_ns():
    return time.monotonic_ns()  # CLOCK_MONOTONIC, as bus::clock::mono_ns()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Soak:
    def __init__(self, busd, agent, busctl):
        self.busd_bin, self.agent_bin, self.busctl = busd, agent, busctl
        self.seconds = int(os.environ.get("SOAK_SECONDS", "120"))
        self.n = int(os.environ.get("SOAK_AGENTS", "200"))
        self.seed = int(os.environ.get("SOAK_SEED", str(int(time.time()))))
        self.rng = random.Random(self.seed)
        self.dir = tempfile.mkdtemp(prefix="busd-soak-")
        self.out = os.path.join(self.dir, "results")
        os.makedirs(self.out)
        self.failures = []
        self.notes = []
        self.busd = {}       # host -> Popen
        self.lifetimes = []  # dicts: host, pid, start_ns, up_ns, samples {start, end}, how it ended
        self.restarts = []   # dicts: host, how, stop_ns, up_ns
        self.agents = []     # specs
        self.procs = {}      # agent index -> Popen
        self.inc = {}        # agent index -> incarnation
        self.kills = 0
        self.crashes = []
        self.netns = []
        self.veth = None
        self.shm_before = set(os.listdir("/dev/shm"))
        self.two_hosts = self.setup_hosts()
        self.hosts = ["a", "b"] if self.two_hosts else ["a"]

    # ------------------------------------------------------------------ hosts and busd
    def setup_hosts(self):
        if os.environ.get("SOAK_ONE_HOST"):
            self.notes.append("one host (SOAK_ONE_HOST set): the remote quarter is skipped")
            return False
        if os.geteuid() != 0:
            self.notes.append("one host: network namespaces need root, so the remote quarter (agents on a second busd over a TCP link) is skipped")
            return False
        if shutil.which("ip") is None:
            self.notes.append("one host: ip (iproute2) is not installed, so the remote quarter is skipped")
            return False
        tag = f"sk{os.getpid() % 100000}"
        net = f"10.{200 + os.getpid() % 50}.{(os.getpid() // 50) % 250}"
        self.ns = {"a": tag + "a", "b": tag + "b"}
        self.ip = {"a": net + ".1", "b": net + ".2"}
        r = subprocess.run(["ip", "netns", "add", self.ns["a"]], capture_output=True, text=True)
        if r.returncode != 0:
            self.notes.append(f"one host: ip netns add failed ({r.stderr.strip()}), so the remote quarter is skipped")
            return False
        self.netns.append(self.ns["a"])
        subprocess.run(["ip", "netns", "add", self.ns["b"]], check=True)
        self.netns.append(self.ns["b"])
        subprocess.run(["ip", "link", "add", tag + "va", "type", "veth", "peer", "name", tag + "vb"], check=True)
        for h, dev in (("a", tag + "va"), ("b", tag + "vb")):
            subprocess.run(["ip", "link", "set", dev, "netns", self.ns[h]], check=True)
            subprocess.run(["ip", "-n", self.ns[h], "addr", "add", self.ip[h] + "/24", "dev", dev], check=True)
            subprocess.run(["ip", "-n", self.ns[h], "link", "set", dev, "up"], check=True)
            subprocess.run(["ip", "-n", self.ns[h], "link", "set", "lo", "up"], check=True)
        return True

    def in_ns(self, host, argv):
        return ["ip", "netns", "exec", self.ns[host]] + argv if self.two_hosts else argv

    def run_dir(self, h):
        return os.path.join(self.dir, h, "run")

    def sock(self, h):
        return os.path.join(self.run_dir(h), "busd.sock")

    def write_config(self, h):
        os.makedirs(self.run_dir(h), exist_ok=True)
        lines = [
            "[busd]",
            f'socket = "{self.sock(h)}"',
            'log_level = "info"',
            "drain_timeout_ms = 1000",
            "[limits]",
            "max_message_size = 16384",
            "ring_capacity = 65536",   # small rings: agents touch all of them at connect (--warm)
            "max_lane_targets = 4",
        ]
        if self.two_hosts:
            lines += ["[cluster]", 'name = "soak"', f'node = "{h}"']
            if h == "a":
                lines.append(f'listen = "{self.ip["a"]}:7400"')
            lines += ["backoff_min_ms = 50", "backoff_max_ms = 500", "hold_bytes = 1048576"]
            if h == "b":
                lines += ["[[links]]", 'kind = "tcp"', f'peer = "{self.ip["a"]}:7400"']
        path = os.path.join(self.dir, h, "busd.toml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def busd_live(self, h):
        r = subprocess.run([self.busctl, "--counters", self.sock(h)[:-5] + ".counters", "stat", "--json"],
                           capture_output=True, text=True)
        return r.returncode == 0 and os.path.exists(self.sock(h))

    def start_busd(self, h):
        cfg = os.path.join(self.dir, h, "busd.toml")
        logf = open(os.path.join(self.dir, h, "busd.log"), "a")
        p = subprocess.Popen(self.in_ns(h, [self.busd_bin, "--config", cfg]), stdout=logf, stderr=logf)
        logf.close()
        self.busd[h] = p
        start = now_ns()
        up = None
        while now_ns() - start < 10 * S:
            if p.poll() is not None:
                break
            if self.busd_live(h):
                up = now_ns()
                break
            time.sleep(0.02)
        if up is None:
            self.fail(f"busd {h} did not come up within 10 s (exit {p.poll()}); see {self.dir}/{h}/busd.log")
            up = now_ns()
        lt = {"host": h, "pid": p.pid, "start_ns": start, "up_ns": up, "samples": {}, "ended": None}
        self.lifetimes.append(lt)
        return lt

    def sample(self, lt, which):
        pid = lt["pid"]
        s = {"t": now_ns()}
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "RssAnon", "RssShmem", "RssFile"):
                        s[k] = int(v.split()[0])
            s["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        except OSError as e:
            self.fail(f"busd {lt['host']} (pid {pid}) could not be sampled ({which}): {e}")
            return
        files = sorted(os.listdir(self.run_dir(lt["host"])))
        s["files"] = files
        if files != ["busd.counters", "busd.sock"]:
            self.fail(f"busd {lt['host']} socket directory holds {files} ({which} sample), expected the socket and the counters page")
        lt["samples"][which] = s

    def stop_busd(self, h, how):
        p = self.busd[h]
        lt = self.lifetimes_of(h)[-1]
        self.sample(lt, "end")
        t = now_ns()
        if how == "kill9":
            p.send_signal(signal.SIGKILL)
            p.wait()
        else:
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(timeout=5)
                if rc != 0:
                    self.fail(f"busd {h} exited with status {rc} on SIGTERM")
            except subprocess.TimeoutExpired:
                self.fail(f"busd {h} did not stop within 5 s of SIGTERM")
                p.kill()
                p.wait()
            left = os.listdir(self.run_dir(h))
            if left:
                self.fail(f"busd {h} left {left} in its socket directory after SIGTERM")
        lt["ended"] = how
        return t

    def lifetimes_of(self, h):
        return [lt for lt in self.lifetimes if lt["host"] == h]

    # ------------------------------------------------------------------ agents
    def plan(self):
        """The agents: (kind, role, subject, count on a, count on b, options), at 200 agents."""
        two = self.two_hosts
        n = self.n
        spec = []

        def scale(c):
            return max(1, round(c * n / 200)) if c > 0 else 0

        # Lane flows: 1:1 pairs on one host (half of the agents).
        for kind, pairs_a, pairs_b in (("lps", 20, 5), ("lrr", 20, 5)):
            pa, pb = scale(pairs_a), scale(pairs_b)
            if not two:
                pa, pb = pa + pb, 0
            for k in range(pa + pb):
                h = "a" if k < pa else "b"
                if kind == "lps":
                    subj = f"lane.ps.{k}"
                    spec.append(dict(kind=kind, lane=True, role="pub", host=h, subject=subj, rate=20))
                    spec.append(dict(kind=kind, lane=True, role="sub", host=h, subject=subj, strict=True))
                else:
                    subj = f"lane.rr.{k}"
                    spec.append(dict(kind=kind, lane=True, role="resp", host=h, subject=subj))
                    spec.append(dict(kind=kind, lane=True, role="req", host=h, subject=subj, rate=10,
                                     async_=(2 if k % 2 else 0)))
        # Through busd: fan-out (more subscribers than max_lane_targets, on both hosts).
        pubs_a, pubs_b = scale(7), scale(3)
        for k in range(pubs_a + pubs_b):
            h = "a" if k < pubs_a or not two else "b"
            spec.append(dict(kind="fan", lane=False, role="pub", host=h, subject=f"fan.{k}", rate=10))
        subs_a, subs_b = scale(25), scale(5)
        for k in range(subs_a + subs_b):
            h = "a" if k < subs_a or not two else "b"
            spec.append(dict(kind="fan", lane=False, role="sub", host=h, subject="fan.>", strict=True))
        # A queue group with members on both hosts, requests from both.
        for role, ca, cb in (("resp", 14, 6), ("req", 14, 6)):
            ca, cb = scale(ca), scale(cb)
            for k in range(ca + cb):
                h = "a" if k < ca or not two else "b"
                d = dict(kind="queue", lane=False, role=role, host=h, subject="svc.q")
                if role == "resp":
                    d["group"] = "workers"
                else:
                    d["rate"] = 5
                    d["async_"] = 4 if k % 2 else 0
                spec.append(d)
        # One subscriber on the other host (a -> b and b -> a). On one host: every subscriber
        # takes every x subject (a fan-out, so not a lane either).
        pairs = scale(10)
        for k in range(pairs):
            ph = "a" if k < pairs // 2 or not two else "b"
            sh = ("b" if ph == "a" else "a") if two else "a"
            spec.append(dict(kind="cross", lane=False, role="pub", host=ph, subject=f"x.{k}", rate=10))
            spec.append(dict(kind="cross", lane=False, role="sub", host=sh, subject=f"x.{k}" if two else "x.>",
                             strict=True))
        for i, d in enumerate(spec):
            d["id"] = i + 1
            d["name"] = f"{d['kind']}-{d['role']}-{i + 1}"
        return spec

    def start_agent(self, i):
        d = self.agents[i]
        inc = self.inc.get(i, -1) + 1
        self.inc[i] = inc
        argv = [self.agent_bin, d["role"], "--name", d["name"], "--host", d["host"], "--id", str(d["id"]),
                "--inc", str(inc), "--subject", d["subject"], "--out", self.out, "--warm", "262144"]
        if "rate" in d:
            argv += ["--rate", str(d["rate"])]
        if d.get("group"):
            argv += ["--group", d["group"]]
        if d.get("async_"):
            argv += ["--async", str(d["async_"])]
        if d.get("strict"):
            argv.append("--strict-start")
        env = dict(os.environ, BUS_SOCKET=self.sock(d["host"]))
        logf = open(os.path.join(self.dir, "agents.log"), "a")
        self.procs[i] = subprocess.Popen(self.in_ns(d["host"], argv), env=env, stdout=logf, stderr=logf)
        logf.close()

    def reap_crashed(self):
        for i, p in list(self.procs.items()):
            rc = p.poll()
            if rc is not None:
                d = self.agents[i]
                self.crashes.append(f"{d['name']}-i{self.inc[i]} exited by itself with status {rc}")
                self.start_agent(i)
        for h, p in self.busd.items():
            if p.poll() is not None:
                self.fail(f"busd {h} (pid {p.pid}) exited by itself with status {p.returncode}")
                self.lifetimes_of(h)[-1]["ended"] = "crashed"
                lt = self.start_busd(h)
                lt["sample_at"] = lt["up_ns"] + 5 * S

    # ------------------------------------------------------------------ run
    def fail(self, msg):
        self.failures.append(msg)
        log("FAIL: " + msg)

    def run(self):
        for h in self.hosts:
            self.write_config(h)
            lt = self.start_busd(h)
            lt["sample_at"] = lt["up_ns"] + 5 * S
        if self.two_hosts:
            end = time.monotonic() + 10
            while time.monotonic() < end and self.links_up("a") != 1:
                time.sleep(0.05)
            if self.links_up("a") != 1:
                self.fail("the link between busd a and b did not come up in 10 s")
        self.agents = self.plan()
        per_host = {h: sum(1 for d in self.agents if d["host"] == h) for h in self.hosts}
        lanes = sum(1 for d in self.agents if d["lane"])
        log(f"seed {self.seed}, {self.seconds} s, {len(self.agents)} agents ({per_host}), {lanes} on lane flows, work dir {self.dir}")
        for n in self.notes:
            log("note: " + n)
        for i in range(len(self.agents)):
            self.start_agent(i)
        # The first lifetimes are sampled 5 s after the agents started, not busd: the baseline
        # is busd with its agents (later restarts find them running already).
        for lt in self.lifetimes:
            lt["sample_at"] = now_ns() + 5 * S
        t0 = time.monotonic()
        # Restarts every 20 s, alternating hosts; kill -9 twice, then SIGTERM twice.
        restart_every = 20
        nrestart = 0
        tick = 0
        while True:
            tick += 1
            target = t0 + tick
            if target > t0 + self.seconds:
                break
            for lt in self.lifetimes:
                if lt.get("sample_at") and lt["ended"] is None and "start" not in lt["samples"]:
                    if now_ns() >= lt["sample_at"]:
                        self.sample(lt, "start")
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.reap_crashed()
            # kill -9 one random agent, start it again as a new incarnation
            i = self.rng.randrange(len(self.agents))
            p = self.procs[i]
            p.send_signal(signal.SIGKILL)
            p.wait()
            self.kills += 1
            self.start_agent(i)
            if tick % restart_every == 0 and tick <= self.seconds - 10:
                h = self.hosts[nrestart % len(self.hosts)]
                how = "kill9" if (nrestart // 2) % 2 == 0 else "term"
                nrestart += 1
                stop = self.stop_busd(h, how)
                lt = self.start_busd(h)
                lt["sample_at"] = lt["up_ns"] + 5 * S
                self.restarts.append({"host": h, "how": how, "stop_ns": stop, "up_ns": lt["up_ns"]})
                log(f"t={tick}s busd {h} restarted ({how}), up after {(lt['up_ns'] - stop) / MS:.0f} ms; "
                    f"{self.kills} agents killed so far")
            for lt in self.lifetimes:
                if lt.get("sample_at") and lt["ended"] is None and "start" not in lt["samples"]:
                    if now_ns() >= lt["sample_at"]:
                        self.sample(lt, "start")
        self.finish()

    def links_up(self, h):
        r = subprocess.run([self.busctl, "--counters", self.sock(h)[:-5] + ".counters", "stat", "--json"],
                           capture_output=True, text=True)
        try:
            return json.loads(r.stdout)["counters"]["links_up"]
        except (ValueError, KeyError):
            return -1

    def finish(self):
        time.sleep(2)  # the agent started at the last tick installs its SIGTERM handler
        self.reap_crashed()
        end_ns = now_ns()
        for h in self.hosts:
            lt = self.lifetimes_of(h)[-1]
            if "start" not in lt["samples"]:
                self.sample(lt, "start")
            self.sample(lt, "end")
        # Agents: SIGTERM, they write their totals and exit.
        for p in self.procs.values():
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for i, p in self.procs.items():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
                if p.returncode != 0:
                    self.crashes.append(f"{self.agents[i]['name']}-i{self.inc[i]} exited with status {p.returncode} on SIGTERM")
            except subprocess.TimeoutExpired:
                self.crashes.append(f"{self.agents[i]['name']}-i{self.inc[i]} did not stop within 15 s of SIGTERM")
                p.kill()
                p.wait()
        for h in self.hosts:
            self.stop_busd_final(h)
        self.check(end_ns)

    def stop_busd_final(self, h):
        p = self.busd[h]
        p.send_signal(signal.SIGTERM)
        try:
            rc = p.wait(timeout=5)
            if rc != 0:
                self.fail(f"busd {h} exited with status {rc} on the final SIGTERM")
        except subprocess.TimeoutExpired:
            self.fail(f"busd {h} did not stop within 5 s of the final SIGTERM")
            p.kill()
            p.wait()
        self.lifetimes_of(h)[-1]["ended"] = "final"
        left = os.listdir(self.run_dir(h))
        if left:
            self.fail(f"busd {h} left {left} in its socket directory at the end")

    # ------------------------------------------------------------------ checks
    def check(self, end_ns):
        shm_new = sorted(set(os.listdir("/dev/shm")) - self.shm_before)
        if shm_new:
            self.fail(f"new files in /dev/shm: {shm_new}")
        for c in self.crashes:
            self.fail("agent " + c)
        # Violations the agents found.
        violations = []
        for f in sorted(os.listdir(self.out)):
            if f.endswith(".violations"):
                with open(os.path.join(self.out, f)) as fh:
                    violations += [line.rstrip("\n") for line in fh if line.strip()]
        results = []
        for f in sorted(os.listdir(self.out)):
            if f.endswith(".json"):
                with open(os.path.join(self.out, f)) as fh:
                    try:
                        results.append(json.load(fh))
                    except ValueError as e:
                        self.fail(f"results file {f} does not parse: {e}")
        kinds = {}
        for d in self.agents:
            kinds[d["name"]] = d
        tot = {}
        for r in results:
            for k in ("published", "publish_failed", "received", "gaps_allowed", "missing_allowed", "streams",
                      "mid_stream_starts", "old_incarnation", "served", "requests", "replies_ok", "replies_err",
                      "lane_sent", "lane_received", "violations", "reconnects"):
                tot[k] = tot.get(k, 0) + r.get(k, 0)
        errs = {}
        for r in results:
            for k, v in r.get("errors", {}).items():
                errs[k] = errs.get(k, 0) + v

        # Every live agent ended connected and wrote its final totals.
        finals = {r["name"]: r for r in results}
        for i, d in enumerate(self.agents):
            name = f"{d['name']}-i{self.inc[i]}"
            r = finals.get(name)
            if r is None or not r.get("final"):
                self.fail(f"{name} wrote no final totals")
            elif r.get("state") != "connected":
                self.fail(f"{name} ended in state {r.get('state')}, not connected")

        # Reconnection: each agent alive across a restart of its busd saw Disconnected, then
        # Connected, by itself; no Disconnected outside a restart.
        missed, spurious, checked = [], [], 0
        for r in results:
            ev = r.get("events", [])
            if not ev:
                continue
            first = ev[0][0]
            last = r["written_ns"]
            rs = [x for x in self.restarts if x["host"] == r["host"]]
            for x in rs:
                if first < x["stop_ns"] - 500 * MS and last > x["up_ns"] + 8 * S:
                    checked += 1
                    d = [t for t, s in ev if s == "disconnected" and x["stop_ns"] <= t <= x["up_ns"] + 3 * S]
                    c = [t for t, s in ev if s == "connected" and d and d[0] <= t <= x["up_ns"] + 6 * S]
                    if not d or not c:
                        missed.append(f"{r['name']}: busd {x['host']} restart at {(x['stop_ns'] - self.lifetimes[0]['start_ns']) / S:.1f}s: "
                                      f"{'no Disconnected' if not d else 'no Connected within 6 s'}")
            for t, s in ev:
                if s == "disconnected" and not any(x["stop_ns"] <= t <= x["up_ns"] + 3 * S for x in rs):
                    spurious.append(f"{r['name']} disconnected at {(t - self.lifetimes[0]['start_ns']) / S:.1f}s with no busd restart")
        for m in missed[:20]:
            self.fail("reconnect: " + m)
        if len(missed) > 20:
            self.fail(f"reconnect: {len(missed) - 20} more")
        for m in spurious[:20]:
            self.fail("reconnect: " + m)
        if len(spurious) > 20:
            self.fail(f"reconnect: {len(spurious) - 20} more")

        # Resubscription: connection periods of 5 s or more carried messages.
        idle = []
        for r in results:
            if r["role"] not in ("sub", "resp"):
                continue
            for f, t, w in r.get("periods", []):
                t = t or r["written_ns"]
                if t - f >= 5 * S and w == 0:
                    idle.append(f"{r['name']}: nothing in a {(t - f) / S:.1f} s connection")
        for m in idle[:20]:
            self.fail("resubscribe: " + m)

        # Lanes.
        lane_pub = sum(r.get("lane_sent", 0) for r in results if kinds[r["name"].rsplit("-i", 1)[0]]["lane"] and r["role"] == "pub")
        all_pub = sum(r["published"] for r in results if kinds[r["name"].rsplit("-i", 1)[0]]["lane"] and r["role"] == "pub")
        lane_sub = sum(r.get("lane_received", 0) for r in results if kinds[r["name"].rsplit("-i", 1)[0]]["lane"] and r["role"] == "sub")
        all_sub = sum(r["received"] for r in results if kinds[r["name"].rsplit("-i", 1)[0]]["lane"] and r["role"] == "sub")
        lane_req = sum(r.get("lane_sent", 0) for r in results if kinds[r["name"].rsplit("-i", 1)[0]]["lane"] and r["role"] == "req")
        all_req = sum(r["requests"] for r in results if kinds[r["name"].rsplit("-i", 1)[0]]["lane"] and r["role"] == "req")
        off_lane = sum(r.get("lane_sent", 0) + r.get("lane_received", 0) for r in results if not kinds[r["name"].rsplit("-i", 1)[0]]["lane"])
        for what, a, b in (("lane publishers", lane_pub, all_pub), ("lane subscribers", lane_sub, all_sub),
                           ("lane requesters", lane_req, all_req)):
            if b == 0 or a < 0.5 * b:
                self.fail(f"lanes: {what} sent/received {a} of {b} messages over lanes (want at least half)")
        if off_lane != 0:
            self.fail(f"lanes: {off_lane} messages of flows that must go through busd went over lanes")

        # Work done at all.
        if tot.get("replies_ok", 0) == 0 or tot.get("received", 0) == 0:
            self.fail("no replies or no messages were checked")
        if tot.get("requests", 0) and tot["replies_ok"] < 0.8 * tot["requests"]:
            self.fail(f"only {tot['replies_ok']} of {tot['requests']} requests were answered")

        # RSS and fds per busd lifetime.
        rows = []
        for lt in self.lifetimes:
            s, e = lt["samples"].get("start"), lt["samples"].get("end")
            if not s or not e:
                rows.append(f"  busd {lt['host']} pid {lt['pid']}: not sampled at both ends (ended {lt['ended']})")
                continue
            dur = (e["t"] - lt["up_ns"]) / S
            row = (f"  busd {lt['host']} pid {lt['pid']} ({dur:.0f} s, ended {lt['ended']}): "
                   f"RSS {s['VmRSS']} -> {e['VmRSS']} kB (anon {s['RssAnon']} -> {e['RssAnon']}, "
                   f"shmem {s['RssShmem']} -> {e['RssShmem']}), fds {s['fds']} -> {e['fds']}")
            rows.append(row)
            for k in ("VmRSS", "fds"):
                if abs(e[k] - s[k]) > 0.10 * s[k]:
                    self.fail(f"busd {lt['host']} pid {lt['pid']}: {k} {s[k]} 5 s after start, {e[k]} at the end of its lifetime (more than 10% apart)")

        print()
        print("== soak summary")
        print(f"  seed {self.seed}, {self.seconds} s, {len(self.agents)} agents on {len(self.hosts)} host(s), "
              f"{sum(1 for d in self.agents if d['lane'])} on lane flows")
        for n in self.notes:
            print("  note: " + n)
        print(f"  agents killed (kill -9): {self.kills}; busd restarts: {len(self.restarts)} "
              f"({', '.join(x['host'] + ':' + x['how'] for x in self.restarts)})")
        print(f"  published {tot.get('published', 0)} (failed while disconnected or pushed back: {tot.get('publish_failed', 0)}), "
              f"received and checked {tot.get('received', 0)} in {tot.get('streams', 0)} streams")
        print(f"  gaps allowed (across a busd restart): {tot.get('gaps_allowed', 0)} ({tot.get('missing_allowed', 0)} messages); "
              f"streams joined mid-way: {tot.get('mid_stream_starts', 0)}; late messages of a dead incarnation: {tot.get('old_incarnation', 0)}")
        print(f"  requests {tot.get('requests', 0)}, replies checked {tot.get('replies_ok', 0)}, errors {tot.get('replies_err', 0)} {errs}; "
              f"served {tot.get('served', 0)}")
        print(f"  lanes: publishers {lane_pub}/{all_pub}, subscribers {lane_sub}/{all_sub}, requesters {lane_req}/{all_req}; "
              f"others {off_lane}")
        print(f"  reconnects: {tot.get('reconnects', 0)}; restart crossings checked: {checked}")
        print(f"  violations found by agents: {len(violations)}")
        for v in violations[:30]:
            print("    " + v)
        if violations:
            self.failures.append(f"{len(violations)} violation(s) found by the agents (above)")
        print("  busd lifetimes:")
        for row in rows:
            print(row)
        print(f"== {len(self.failures)} failure(s)")
        for f in self.failures:
            print("  " + f)

    def cleanup(self):
        for p in list(self.procs.values()) + list(self.busd.values()):
            if p.poll() is None:
                p.kill()
                p.wait()
        for ns in self.netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if self.failures and os.environ.get("SOAK_KEEP", "") == "":
            # Keep the logs of a failed run in the test log.
            for h in getattr(self, "hosts", []):
                logp = os.path.join(self.dir, h, "busd.log")
                if os.path.exists(logp):
                    print(f"--- last lines of busd {h} log (agent joins, leaves and slow-consumer events left out)")
                    with open(logp) as f:
                        keep = [line for line in f if "event=agent_" not in line and "event=slow_consumer" not in line]
                        print("".join(keep[-30:]))
        if os.environ.get("SOAK_KEEP"):
            print(f"kept {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    soak = Soak(*sys.argv[1:4])
    # Watchdog: whatever happens, everything is killed at the duration plus a margin.
    margin = 50

    def watchdog(signum, frame):
        raise TimeoutError(f"watchdog: still running {margin} s after the planned {soak.seconds} s")

    signal.signal(signal.SIGALRM, watchdog)
    signal.signal(signal.SIGTERM, lambda s, f: (_ for _ in ()).throw(KeyboardInterrupt()))
    signal.alarm(soak.seconds + margin)
    try:
        soak.run()
    except (TimeoutError, KeyboardInterrupt) as e:
        soak.fail(f"stopped: {e!r}")
    finally:
        signal.alarm(0)
        soak.cleanup()
    return 1 if soak.failures else 0


if __name__ == "__main__":
    sys.exit(main())
