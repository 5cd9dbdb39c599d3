#!/usr/bin/env python3
"""Checks a busbench --json document against its schema (what scripts may rely on).

  check_bench_json.py FILE [--scenario NAME]

Exits 1 naming the first field that is missing, of the wrong type or implausible.
"""
import json
import math
import os
import sys

NUM = (int, float)


def fail(msg):
    print("busbench json: " + msg, file=sys.stderr)
    sys.exit(1)


def need(obj, key, types, where):
    if key not in obj:
        fail(f"{where}: missing '{key}'")
    v = obj[key]
    if not isinstance(v, types) or (isinstance(v, bool) and types is not bool):
        fail(f"{where}: '{key}' is {type(v).__name__}, wanted {types}")
    if isinstance(v, float) and not math.isfinite(v):
        fail(f"{where}: '{key}' is not finite")
    return v


# For test scripts that import this file (sys.path += its folder): look-ups that name what they
# did not find.
def load(folder, name):
    """The document NAME.json in FOLDER."""
    with open(os.path.join(folder, name + ".json")) as f:
        return json.load(f)


def fact_value(doc, prefix):
    """The value of the first fact whose name starts with PREFIX."""
    for f in doc["facts"]:
        if f["name"].startswith(prefix):
            return f["value"]
    raise SystemExit(f"{doc['scenario']}: no fact {prefix!r}: {[f['name'] for f in doc['facts']]}")


def named(rows, name):
    """The row called NAME in a list of rows (latency_ns, throughput, hops_ns, ...)."""
    for r in rows:
        if r["name"] == name:
            return r
    raise SystemExit(f"no row {name!r}: {[r['name'] for r in rows]}")


def lanes_of(row, where):
    """A bus row's 'lanes': true (lanes on), false (off) or null (not chosen, or a baseline)."""
    if "lanes" not in row:
        fail(f"{where}: missing 'lanes'")
    v = row["lanes"]
    if v is not None and not isinstance(v, bool):
        fail(f"{where}: 'lanes' is {type(v).__name__}, wanted true, false or null")
    if row.get("baseline") and v is not None:
        fail(f"{where}: a baseline row names lanes")
    return v


def targets_of(doc, variant=None):
    """The target lines of DOC (for one --lanes variant: "lanes", "no lanes")."""
    return [t for t in doc["targets"] if variant is None or t["variant"] == variant]


def check(doc, scenario=None):
    need(doc, "scenario", str, "document")
    if scenario and doc["scenario"] != scenario:
        fail(f"scenario is {doc['scenario']!r}, wanted {scenario!r}")
    need(doc, "header", str, "document")
    need(doc, "latency_unit", str, "document")
    baselines = [r["name"] for r in doc.get("latency_ns", []) if r.get("baseline")]
    for r in need(doc, "latency_ns", list, "document"):
        w = "latency_ns[%s]" % r.get("name")
        need(r, "name", str, w)
        need(r, "note", str, w)
        need(r, "baseline", bool, w)
        runs = need(r, "runs", int, w)
        for k in ("p50", "p90", "p99", "p99_9", "p99_99", "max", "mean", "stddev", "ops_per_s"):
            if need(r, k, NUM, w) < 0:
                fail(f"{w}: {k} is negative")
        if not r["p50"] <= r["p90"] <= r["p99"] <= r["p99_9"] <= r["p99_99"]:
            fail(f"{w}: percentiles out of order")
        lanes_of(r, w)
        if len(need(r, "p50_per_run", list, w)) != runs:
            fail(f"{w}: p50_per_run has {len(r['p50_per_run'])} entries for {runs} runs")
        if not r["baseline"] and baselines:
            vs = need(r, "vs", dict, w)
            if sorted(vs) != sorted(baselines):
                fail(f"{w}: vs names {sorted(vs)}, baselines are {sorted(baselines)}")
            for b, ratio in vs.items():
                need(ratio, "p50", NUM, f"{w}.vs[{b}]")
                need(ratio, "p99", NUM, f"{w}.vs[{b}]")
    for r in need(doc, "throughput", list, "document"):
        w = "throughput[%s]" % r.get("name")
        need(r, "name", str, w)
        need(r, "baseline", bool, w)
        need(r, "record_bytes", int, w)
        lanes_of(r, w)
        if need(r, "msgs_per_s", NUM, w) <= 0:
            fail(f"{w}: msgs_per_s is not positive")
        need(r, "per_run", list, w)
    for r in need(doc, "cost_ns_per_op", list, "document"):
        need(r, "name", str, "cost")
        need(r, "ns", NUM, "cost")
    for r in need(doc, "hops_ns", list, "document"):
        for k in ("p50", "p90", "p99", "mean"):
            need(r, k, NUM, "hops_ns[%s]" % r.get("name"))
    for r in need(doc, "processes", list, "document"):
        need(r, "name", str, "processes")
        if need(r, "cpu_s_per_million", NUM, "processes[%s]" % r["name"]) < 0:
            fail("processes: negative CPU")
    for r in need(doc, "facts", list, "document"):
        need(r, "name", str, "facts")
        need(r, "unit", str, "facts")
        need(r, "value", NUM, "facts[%s]" % r["name"])
        need(r, "per_run", list, "facts[%s]" % r["name"])
    for t in need(doc, "targets", list, "document"):
        w = "targets[%s]" % t.get("name")
        need(t, "name", str, w)
        need(t, "variant", str, w)
        need(t, "value", NUM, w)
        need(t, "unit", str, w)
        need(t, "of", str, w)
        need(t, "note", str, w)
        if t.get("limit") is None:
            if t.get("met") is not None:
                fail(f"{w}: 'met' without a 'limit'")
        else:
            if need(t, "limit", NUM, w) <= 0:
                fail(f"{w}: limit is not positive")
            need(t, "at_most", bool, w)
            if "met" not in t or not (t["met"] is None or isinstance(t["met"], bool)):
                fail(f"{w}: 'met' is neither true, false nor null")
            if t["met"] is not None:
                ok = t["value"] <= t["limit"] if t["at_most"] else t["value"] >= t["limit"]
                if ok != t["met"]:
                    fail(f"{w}: met is {t['met']} for {t['value']} against {t['limit']}")
    for n in need(doc, "notes", list, "document"):
        if not isinstance(n, str):
            fail("notes: not a string")
    return doc


def main():
    args = sys.argv[1:]
    scenario = None
    if "--scenario" in args:
        i = args.index("--scenario")
        scenario = args[i + 1]
        del args[i:i + 2]
    with open(args[0]) as f:
        try:
            doc = json.load(f)
        except json.JSONDecodeError as e:
            fail(f"{args[0]} is not JSON: {e}")
    check(doc, scenario)
    print(f"{args[0]}: schema ok ({doc['scenario']})")


if __name__ == "__main__":
    main()
