#!/usr/bin/env node
// Validates Kubernetes manifests offline against the Kubernetes object schemas, as
// `kubectl apply --validate=strict` would against a cluster, with no cluster and no network.
//
//   node validate.js FILE...                  every document of every file; exit 0: all valid
//   node validate.js --data FILE CONFIGMAP KEY  prints a ConfigMap's data[KEY] (for busd --check-config)
//
// The schemas come from the npm package kubernetes-models (the Kubernetes OpenAPI definitions
// compiled into JSON-schema validators; installed with its pinned lock file by
// deploy/install-deps.sh; NODE_PATH names its node_modules). Per document:
//  - the object's apiVersion/kind must be one kubernetes-models knows;
//  - the schema: required fields, types, formats (int32, quantities, ...), enums;
//  - strict fields: a key the schema does not define (a misspelled `readinesProbe`) is refused.
//    The compiled validators do not check this themselves, so each object is handed to them
//    behind a Proxy that records which keys they look at: a key of an object they inspected
//    that they never looked at is not in the schema. (Free-form maps, such as labels or a
//    ConfigMap's data, are enumerated by the validator, so all their keys count as looked at.)
//  - what the API server checks besides: metadata.name, and a workload's selector matching its
//    pod template's labels.
"use strict";

const fs = require("fs");

function load(mod) {
  try {
    return require(mod);
  } catch (e) {
    process.stderr.write(`validate.js: cannot load ${mod} (${e.code || e.message}): ` +
      "run deploy/install-deps.sh, and set NODE_PATH to the validator's node_modules\n");
    process.exit(3);
  }
}
const YAML = load("yaml");
load("kubernetes-models/package.json");

function parseFile(file) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"), { uniqueKeys: true });
  const out = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${file}: YAML: ${d.errors.map((e) => e.message).join("; ")}`);
    const obj = d.toJS();
    if (obj !== null && obj !== undefined) out.push(obj);
  }
  return out;
}

// A deep view of `root` that records, per object, which keys the validator read.
function tracked(root) {
  const read = new Map();
  const proxies = new WeakMap();
  const wrap = (v) => {
    if (v === null || typeof v !== "object") return v;
    if (proxies.has(v)) return proxies.get(v);
    const keys = new Set();
    read.set(v, keys);
    const p = new Proxy(v, {
      get(t, k, r) {
        if (typeof k === "string") keys.add(k);
        return wrap(Reflect.get(t, k, r));
      },
      has(t, k) {
        if (typeof k === "string") keys.add(k);
        return Reflect.has(t, k);
      },
      ownKeys(t) {
        for (const k of Reflect.ownKeys(t)) if (typeof k === "string") keys.add(k);
        return Reflect.ownKeys(t);
      },
    });
    proxies.set(v, p);
    return p;
  };
  return { proxy: wrap(root), read };
}

function unknownFields(obj, read, path, out) {
  if (obj === null || typeof obj !== "object") return;
  if (Array.isArray(obj)) {
    obj.forEach((x, i) => unknownFields(x, read, `${path}[${i}]`, out));
    return;
  }
  const keys = read.get(obj);
  for (const k of Object.keys(obj)) {
    // An object the validator never looked into is free-form (or below an error): not judged.
    if (keys && keys.size > 0 && !keys.has(k)) out.push(`${path}.${k}: unknown field (not in the schema)`);
    unknownFields(obj[k], read, `${path}.${k}`, out);
  }
}

// "/spec/containers/0/name" -> ".spec.containers[0].name", as unknownFields() names paths.
function jsonPath(pointer) {
  const segs = pointer.split("/").slice(1).map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
  return segs.map((s) => (/^[0-9]+$/.test(s) ? `[${s}]` : `.${s}`)).join("") || ".";
}

function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Za-z0-9]+$/.test(kind) ||
      !/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion)) {
    return null;
  }
  try {
    const mod = require(`kubernetes-models/${apiVersion}/${kind}`);
    return mod[kind] || null;
  } catch {
    return null;
  }
}

function validate(obj) {
  const errors = [];
  const Model = modelFor(obj.apiVersion, obj.kind);
  if (!Model) return [`no Kubernetes schema for apiVersion ${JSON.stringify(obj.apiVersion)} kind ${JSON.stringify(obj.kind)}`];
  const { proxy, read } = tracked(obj);
  try {
    Model.prototype.validate.call(proxy);
  } catch (e) {
    for (const err of e.errors || [{ instancePath: "", message: e.message }]) {
      const where = jsonPath(err.instancePath || "");
      errors.push(`${where}: ${err.message}${err.params && err.params.allowedValues ? " " + JSON.stringify(err.params.allowedValues) : ""}`);
    }
  }
  unknownFields(obj, read, "", errors);
  const meta = obj.metadata || {};
  if (typeof meta.name !== "string" || meta.name === "") errors.push(".metadata.name: required");
  const spec = obj.spec || {};
  if (["DaemonSet", "Deployment", "StatefulSet", "ReplicaSet"].includes(obj.kind) && spec.selector) {
    const want = spec.selector.matchLabels || {};
    const have = (spec.template && spec.template.metadata && spec.template.metadata.labels) || {};
    for (const [k, v] of Object.entries(want)) {
      if (have[k] !== v) errors.push(`.spec.template.metadata.labels: selector ${k}=${v} does not match the template`);
    }
  }
  return errors;
}

function main(argv) {
  if (argv[0] === "--data") {
    if (argv.length !== 4) throw new Error("usage: validate.js --data FILE CONFIGMAP KEY");
    const [, file, name, key] = argv;
    const cm = parseFile(file).find((o) => o.kind === "ConfigMap" && o.metadata && o.metadata.name === name);
    if (!cm || !cm.data || typeof cm.data[key] !== "string") throw new Error(`${file}: no ConfigMap ${name} with data key ${key}`);
    process.stdout.write(cm.data[key]);
    return 0;
  }
  if (argv.length === 0) throw new Error("usage: validate.js FILE... | --data FILE CONFIGMAP KEY");
  let bad = 0;
  for (const file of argv) {
    const docs = parseFile(file);
    if (docs.length === 0) {
      console.log(`${file}: no Kubernetes object`);
      ++bad;
    }
    for (const obj of docs) {
      const label = `${file}: ${obj.kind || "?"}/${(obj.metadata && obj.metadata.name) || "?"} (${obj.apiVersion || "?"})`;
      const errors = validate(obj);
      if (errors.length === 0) {
        console.log(`ok   ${label}`);
      } else {
        ++bad;
        console.log(`FAIL ${label}`);
        for (const e of errors) console.log(`       ${e}`);
      }
    }
  }
  return bad === 0 ? 0 : 1;
}

try {
  process.exit(main(process.argv.slice(2)));
} catch (e) {
  process.stderr.write(`validate.js: ${e.message}\n`);
  process.exit(2);
}
