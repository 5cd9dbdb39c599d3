#!/usr/bin/env python3
"""Checks deploy/grafana/busd-dashboard.json against what busd exports.

  check_dashboard.py DASHBOARD --busd BUSD     start a private busd with metrics_listen, scrape it
  check_dashboard.py DASHBOARD --scrape FILE   use a saved scrape (text exposition format)

The dashboard must be valid JSON in Grafana's dashboard model (schemaVersion >= 36, a Prometheus
data source variable every panel and query uses, unique panel ids, grid positions within 24
columns), and every metric name in every panel's expression and in every query variable must be
one busd exports (busd writes HELP and TYPE for every family it knows, samples or not, so one
scrape of any busd names them all). Label names an expression uses (by/without, matchers,
{{legend}}) must be labels of the metrics it reads, where the scrape shows samples of them.
Exit 0 when it passes, 1 with the problems listed otherwise. Also imported by
tests/integration/metrics_scrape.py, which checks the dashboard against a scrape with agents,
a lane and a link (so that the labels are checked too)."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

# Series the dashboard must plot (the "main series").
REQUIRED = [
    "busd_messages_in_total", "busd_messages_out_total", "busd_bytes_in_total", "busd_bytes_out_total",
    "busd_drops_slow_consumer_total", "busd_drops_acl_total", "busd_drops_too_large_total",
    "busd_verify_failures_total", "busd_link_drops_held_full_total", "busd_slow_events_total",
    "busd_slow_disconnects_total", "busd_agents_connected", "busd_links_up", "busd_peer_up",
    "busd_peer_rtt_seconds", "busd_peer_retransmits_total", "busd_peer_naks_total", "busd_lanes_open",
    "busd_agent_messages_in_total", "busd_agent_messages_out_total", "busd_up",
    "busd_request_reply_seconds_bucket", "busd_link_rtt_seconds_bucket",
]
# Labels Prometheus itself adds to every scraped series.
TARGET_LABELS = {"instance", "job"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}

STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
METRIC = re.compile(r"\b(busd_[A-Za-z0-9_]*)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(?:\{(.*)\})?\s+\S+$")
LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="(?:[^"\\]|\\.)*"')


def families_of(text):
    """{family name as in its TYPE line: set of label names seen in its samples (None: no sample)}."""
    fams = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            fams.setdefault(line.split()[2], None)
        elif line and not line.startswith("#"):
            m = SAMPLE.match(line)
            if not m:
                raise ValueError(f"not a sample line: {line!r}")
            labels = {k for k in LABEL.findall(m.group(2) or "")}
            seen = fams.get(m.group(1))
            fams[m.group(1)] = labels if seen is None else seen | labels
    return fams


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        for inner in p.get("panels", []) or []:
            yield inner


def check_expr(where, expr, fams, legend=""):
    errors = []
    bare = STRING.sub('""', expr)
    names = set(METRIC.findall(bare))
    if not names:
        errors.append(f"{where}: no busd metric in {expr!r}")
    unknown = sorted(n for n in names if n not in fams)
    for n in unknown:
        errors.append(f"{where}: {n} is not a metric busd exports")
    known = [fams[n] for n in names if n in fams]
    if unknown or not known or any(k is None for k in known):
        return errors  # the labels of a metric without samples are not known from this scrape
    have = set(TARGET_LABELS).union(*known)
    used = set()
    for group in GROUPING.findall(bare):
        used |= {x.strip() for x in group.split(",") if x.strip()}
    for sel in MATCHERS.findall(bare):
        used |= set(MATCHER_LABEL.findall(sel))
    used -= PROMQL_WORDS
    for label in sorted(used - have):
        errors.append(f"{where}: label {label!r} is not a label of {sorted(names)}")
    grouped = set()
    for group in GROUPING.findall(bare):
        grouped |= {x.strip() for x in group.split(",") if x.strip()}
    for label in LEGEND.findall(legend):
        if label not in have and label not in grouped:
            errors.append(f"{where}: legend label {label!r} is not a label of {sorted(names)}")
    return errors


def check(dash, fams):
    """A list of problems (empty: the dashboard is fine) for the parsed dashboard `dash`."""
    errors = []
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        errors.append(f"schemaVersion {dash.get('schemaVersion')!r}: want an integer >= 36")
    for key in ("title", "uid"):
        if not isinstance(dash.get(key), str) or not dash[key]:
            errors.append(f"dashboard {key} missing")
    variables = dash.get("templating", {}).get("list", [])
    ds = [v["name"] for v in variables if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if len(ds) != 1:
        errors.append(f"want one Prometheus data source variable, found {ds}")
        return errors
    ds_uid = "${" + ds[0] + "}"

    def uses_ds(obj):
        d = obj.get("datasource")
        return isinstance(d, dict) and d.get("type") == "prometheus" and d.get("uid") == ds_uid

    for v in variables:
        if v.get("type") != "query":
            continue
        where = f"variable {v.get('name')}"
        if not uses_ds(v):
            errors.append(f"{where}: its datasource is not {ds_uid}")
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else q or ""
        errors += check_expr(where, q, fams)

    ids = set()
    used = set()
    n_queries = 0
    for p in panels_of(dash):
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids or not isinstance(p.get("id"), int):
            errors.append(f"{where}: id missing or not unique")
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in ("h", "w", "x", "y")) or g["x"] + g["w"] > 24 or g["w"] < 1:
            errors.append(f"{where}: bad gridPos {g}")
        if p.get("type") == "row":
            continue
        if not uses_ds(p):
            errors.append(f"{where}: its datasource is not {ds_uid}")
        targets = p.get("targets", [])
        if not targets:
            errors.append(f"{where}: no query")
        for t in targets:
            tw = f"{where} target {t.get('refId')}"
            if not uses_ds(t):
                errors.append(f"{tw}: its datasource is not {ds_uid}")
            expr = t.get("expr", "")
            errors += check_expr(tw, expr, fams, t.get("legendFormat", ""))
            used |= set(METRIC.findall(STRING.sub('""', expr)))
            n_queries += 1
    for name in REQUIRED:
        if name not in used:
            errors.append(f"no panel plots {name}")
    if not errors:
        print(f"dashboard: {len(ids)} panels, {n_queries} queries, {len(used)} busd metrics; "
              f"all {len(used)} exported by busd")
    return errors


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape_private_busd(busd):
    with tempfile.TemporaryDirectory(prefix="busd-dash-") as d:
        port = free_port()
        conf = os.path.join(d, "busd.toml")
        with open(conf, "w") as f:
            f.write(f'[busd]\nmetrics_listen = "127.0.0.1:{port}"\n')
        env = {k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"}
        env["BUS_SOCKET"] = os.path.join(d, "busd.sock")
        log = open(os.path.join(d, "busd.log"), "w+")
        p = subprocess.Popen([busd, "--config", conf], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            end = time.monotonic() + 10
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                        return r.read().decode("utf-8")
                except OSError:
                    if time.monotonic() > end or p.poll() is not None:
                        log.seek(0)
                        raise SystemExit(f"busd's metrics endpoint did not answer:\n{log.read()}")
                    time.sleep(0.05)
        finally:
            p.send_signal(signal.SIGTERM)
            rc = p.wait(timeout=10)
            log.close()
            if rc != 0:
                raise SystemExit(f"busd exited {rc}")


def main(argv):
    if len(argv) != 4 or argv[2] not in ("--busd", "--scrape"):
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        dash = json.load(f)  # invalid JSON fails here, with the position
    if argv[2] == "--busd":
        text = scrape_private_busd(argv[3])
    else:
        with open(argv[3], encoding="utf-8") as f:
            text = f.read()
    fams = families_of(text)
    errors = check(dash, fams)
    for e in errors:
        print("dashboard:", e, file=sys.stderr)
    # The check itself catches a misspelt metric and a label the metric lacks.
    bad = json.loads(json.dumps(dash).replace("busd_messages_in_total", "busd_messages_inn_total"))
    if not any("busd_messages_inn_total is not a metric" in e for e in check(bad, fams)):
        print("dashboard: the check missed a misspelt metric", file=sys.stderr)
        errors.append("self-check")
    bad_label = check_expr("self-check", 'sum by (nosuch) (busd_up)', {"busd_up": set()})
    if not any("'nosuch'" in e for e in bad_label):
        print("dashboard: the check missed an unknown label", file=sys.stderr)
        errors.append("self-check")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
