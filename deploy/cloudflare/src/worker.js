// Tandem's edge split as a Cloudflare Worker.
//
// The routing decision is not written here: it is crates/tandem-route
// compiled to WebAssembly (build/tandem_route.wasm, built by test.sh), the
// same code the native edge runs, so both send an account to the same
// cluster at the same weights (crates/tandem-route/vectors.json is checked
// against both). This file only gathers the inputs and proxies:
//
// - routes: KV namespace binding ROUTES, key "routes", if bound and set;
//   else the TANDEM_ROUTES binding (a JSON string or a JSON binding):
//   {"clusters":[{"name":"aws","role":"stable","weight":95,
//                 "origin":"https://aws.example.net"}, ...]}
// - pin: header x-dex-version (canary|stable, any case; anything else is
//   no pin);
// - account: header x-tandem-account, else query ?account=, else the JSON
//   body's "account" for POST and PATCH; an empty account is none;
// - without an account, a random 64-bit key splits requests by weight.
//
// The request goes to the chosen cluster's origin with its method, path,
// query, headers and body; the answer gets x-tandem-worker-cluster (the
// Worker's choice) and x-tandem-cluster (the origin's own when it sent one,
// as a Tandem edge does, else the Worker's choice). A connection
// error moves to the next cluster of the same ranking (the API makes every
// retry safe). No cluster: 503 with a JSON error.

import routeModule from "../build/tandem_route.wasm";

const wasm = new WebAssembly.Instance(routeModule, {}).exports;
const INPUT_PTR = wasm.input_ptr();
const INPUT_CAPACITY = wasm.input_capacity();

// Limits, each answered with a clear error when reached.
const MAX_ACCOUNT_BYTES = 4096;
const MAX_BODY_BYTES = 1 << 20;
const MAX_CLUSTERS = 64;
const MAX_NAME_BYTES = 255;
const MAX_WEIGHT = 0xffffffff;

const WIRE_VERSION = 1;
const NO_CLUSTER = -1;

const utf8 = new TextEncoder();

function jsonResponse(status, body, headers = {}) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

class ConfigError extends Error {}

// Parsed routes, kept while the raw text is unchanged.
let cached = { raw: undefined, routes: undefined };

function parseRoutes(raw) {
  const cfg = typeof raw === "string" ? JSON.parse(raw) : raw;
  const list = cfg && cfg.clusters;
  if (!Array.isArray(list) || list.length === 0 || list.length > MAX_CLUSTERS) {
    throw new ConfigError(`clusters: a list of 1 to ${MAX_CLUSTERS}`);
  }
  const seen = new Set();
  const clusters = list.map((c, i) => {
    const name = c && c.name;
    const nameBytes = typeof name === "string" ? utf8.encode(name) : null;
    if (!nameBytes || nameBytes.length === 0 || nameBytes.length > MAX_NAME_BYTES) {
      throw new ConfigError(`cluster ${i}: name must be 1 to ${MAX_NAME_BYTES} bytes`);
    }
    if (seen.has(name)) throw new ConfigError(`cluster ${i}: name ${name} used twice`);
    seen.add(name);
    if (c.role !== "stable" && c.role !== "canary") {
      throw new ConfigError(`cluster ${name}: role must be stable or canary`);
    }
    if (!Number.isInteger(c.weight) || c.weight < 0 || c.weight > MAX_WEIGHT) {
      throw new ConfigError(`cluster ${name}: weight must be an integer 0 to ${MAX_WEIGHT}`);
    }
    let origin;
    try {
      origin = new URL(c.origin);
    } catch {
      throw new ConfigError(`cluster ${name}: origin must be a URL`);
    }
    if (origin.protocol !== "http:" && origin.protocol !== "https:") {
      throw new ConfigError(`cluster ${name}: origin must be http or https`);
    }
    return { name, nameBytes, role: c.role, weight: c.weight, origin: origin.origin };
  });
  // The cluster part of the wire form (see crates/tandem-route/src/wire.rs).
  const size = 1 + clusters.reduce((n, c) => n + 6 + c.nameBytes.length, 0);
  const tail = new Uint8Array(size);
  const view = new DataView(tail.buffer);
  tail[0] = clusters.length;
  let at = 1;
  for (const c of clusters) {
    tail[at] = c.role === "stable" ? 1 : 2;
    view.setUint32(at + 1, c.weight, true);
    tail[at + 5] = c.nameBytes.length;
    tail.set(c.nameBytes, at + 6);
    at += 6 + c.nameBytes.length;
  }
  return { clusters, tail };
}

async function loadRoutes(env) {
  let raw = null;
  if (env.ROUTES) raw = await env.ROUTES.get("routes");
  if (raw === null || raw === undefined) raw = env.TANDEM_ROUTES;
  if (raw === null || raw === undefined) {
    throw new ConfigError("no routes: set KV key ROUTES/routes or TANDEM_ROUTES");
  }
  if (raw !== cached.raw) {
    cached = { raw, routes: parseRoutes(raw) };
  }
  return cached.routes;
}

function parsePin(value) {
  if (value === null) return 0;
  const v = value.trim().toLowerCase();
  return v === "stable" ? 1 : v === "canary" ? 2 : 0;
}

// workerd hands a header value to JavaScript decoded as UTF-8, so the
// account's bytes are its UTF-8 encoding again (the native edge takes the
// raw bytes: the same for any valid UTF-8 value).
function headerBytes(value) {
  return utf8.encode(value);
}

function findAccount(request, url, body) {
  const h = request.headers.get("x-tandem-account");
  if (h !== null && h !== "") return headerBytes(h);
  const q = url.searchParams.get("account");
  if (q !== null && q !== "") return utf8.encode(q);
  if (body && (request.method === "POST" || request.method === "PATCH")) {
    try {
      const doc = JSON.parse(new TextDecoder().decode(body));
      if (doc && typeof doc.account === "string" && doc.account !== "") {
        return utf8.encode(doc.account);
      }
    } catch {
      // Not JSON: no account; the node answers the bad body itself.
    }
  }
  return null;
}

function randomKey() {
  const w = crypto.getRandomValues(new Uint32Array(2));
  return (BigInt(w[0]) << 32n) | BigInt(w[1]);
}

// One decision by the wasm module: the cluster's index or NO_CLUSTER.
function decide(routes, pin, account, key, excluded) {
  const accountLen = account ? account.length : 0;
  const len = 23 + accountLen + routes.tail.length;
  if (len > INPUT_CAPACITY) throw new Error("routing input too large");
  const input = new Uint8Array(wasm.memory.buffer, INPUT_PTR, len);
  const view = new DataView(wasm.memory.buffer, INPUT_PTR, len);
  input[0] = WIRE_VERSION;
  input[1] = pin;
  input[2] = account ? 1 : 0;
  view.setBigUint64(3, key, true);
  view.setBigUint64(11, excluded, true);
  view.setUint32(19, accountLen, true);
  if (account) input.set(account, 23);
  input.set(routes.tail, 23 + accountLen);
  const answer = wasm.route(len);
  if (answer < NO_CLUSTER) throw new Error(`routing input malformed (${answer})`);
  return answer;
}

async function handle(request, env) {
  let routes;
  try {
    routes = await loadRoutes(env);
  } catch (e) {
    return jsonResponse(503, { error: `routing config: ${e.message}` });
  }
  const url = new URL(request.url);
  const method = request.method;
  let body = null;
  if (method !== "GET" && method !== "HEAD") {
    const declared = Number(request.headers.get("content-length") || 0);
    if (declared > MAX_BODY_BYTES) {
      return jsonResponse(413, { error: `body over ${MAX_BODY_BYTES} bytes` });
    }
    body = await request.arrayBuffer();
    if (body.byteLength > MAX_BODY_BYTES) {
      return jsonResponse(413, { error: `body over ${MAX_BODY_BYTES} bytes` });
    }
  }
  const account = findAccount(request, url, body);
  if (account && account.length > MAX_ACCOUNT_BYTES) {
    return jsonResponse(400, { error: `account over ${MAX_ACCOUNT_BYTES} bytes` });
  }
  const pin = parsePin(request.headers.get("x-dex-version"));
  const key = randomKey();

  const headers = new Headers(request.headers);
  headers.delete("host");
  headers.delete("content-length");
  let excluded = 0n;
  let lastError = null;
  for (;;) {
    const i = decide(routes, pin, account, key, excluded);
    if (i === NO_CLUSTER) break;
    const cluster = routes.clusters[i];
    const target = new URL(url.pathname + url.search, cluster.origin);
    let answer;
    try {
      answer = await fetch(target, { method, headers, body, redirect: "manual" });
    } catch (e) {
      // Connection error: the next cluster of the same ranking.
      lastError = `${cluster.name}: ${e.message}`;
      excluded |= 1n << BigInt(i);
      continue;
    }
    const out = new Response(answer.body, answer);
    // x-tandem-worker-cluster is always this Worker's choice. An origin
    // that is itself a Tandem edge names the cluster that really answered
    // in x-tandem-cluster (the inner, per-cluster split); that header is
    // kept, and set to this Worker's choice only when the origin sent none.
    out.headers.set("x-tandem-worker-cluster", cluster.name);
    const own = answer.headers.get("x-tandem-cluster");
    if (own === null || own === "") out.headers.set("x-tandem-cluster", cluster.name);
    return out;
  }
  if (lastError !== null) {
    return jsonResponse(502, { error: `no cluster reachable (last: ${lastError})` });
  }
  const why = pin ? `no cluster runs ${pin === 1 ? "stable" : "canary"}` : "no cluster has weight";
  return jsonResponse(503, { error: why });
}

export default {
  fetch(request, env) {
    return handle(request, env);
  },
};
