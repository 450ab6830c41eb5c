// Tests of the Worker running in workerd (the real Cloudflare runtime, from
// npm) against upstream HTTP servers on loopback, one per cluster, that
// answer with their cluster's name and echo what they received.
//
// The routes come from a KV namespace binding (ROUTES) served by a small KV
// server in this process, so a weight change is a KV write, as in
// production; one test leaves the KV key unset to check the TANDEM_ROUTES
// fallback. The shared vectors (crates/tandem-route/vectors.json) must be
// reproduced case by case: the same accounts go to the same clusters as in
// the native edge.
//
// Run by ../test.sh (which builds build/tandem_route.wasm first), or
// `node test/run.mjs` from deploy/cloudflare. WORKERD overrides the
// workerd binary, TANDEM_ROUTE_WASM the module's path.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const repo = path.resolve(root, "../..");
const buildDir = path.join(root, "build");
const wasmPath = path.join(buildDir, "tandem_route.wasm");
const workerdBin =
  process.env.WORKERD ||
  path.join(root, "node_modules/@cloudflare/workerd-linux-64/bin/workerd");
const vectors = JSON.parse(
  fs.readFileSync(path.join(repo, "crates/tandem-route/vectors.json"), "utf8"),
);

const CLUSTERS = ["aws", "gcp", "azure"];
const upstreams = {}; // name -> { server, port, seen: [] }
let deadPort; // a port nothing listens on
let kv; // { server, port, value }
let workerd; // child process
let edgePort;
const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

function listen(server) {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server.address().port)));
}

async function freePort() {
  const s = net.createServer();
  const port = await listen(s);
  await new Promise((r) => s.close(r));
  return port;
}

function upstream(name) {
  const u = { seen: [] };
  u.server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (d) => chunks.push(d));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      u.seen.push({ method: req.method, url: req.url });
      const status = req.url.startsWith("/created") ? 201 : 200;
      const head = {
        "content-type": "application/json",
        "x-upstream": name,
        "x-tandem-seq": "0:42",
      };
      // Under /inner/ the upstream acts as a Tandem edge: it names the
      // cluster behind it that answered (here "<name>-inner").
      if (req.url.startsWith("/inner/")) head["x-tandem-cluster"] = `${name}-inner`;
      // Under /inner-empty/ it sends the header empty.
      if (req.url.startsWith("/inner-empty/")) head["x-tandem-cluster"] = "";
      res.writeHead(status, head);
      res.end(
        JSON.stringify({ cluster: name, method: req.method, url: req.url, headers: req.headers, body }),
      );
    });
  });
  return u;
}

// workerd's KV binding asks its service `GET /<key>?urlencoded=true`;
// 404 means the key is not set.
function kvServer() {
  const k = { value: null, gets: 0 };
  k.server = http.createServer((req, res) => {
    k.gets++;
    const key = decodeURIComponent(new URL(req.url, "http://kv").pathname.slice(1));
    if (req.method === "GET" && key === "routes" && k.value !== null) {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end(k.value);
    } else {
      res.writeHead(404);
      res.end();
    }
  });
  return k;
}

function routesFor(clusters, origins = {}) {
  return JSON.stringify({
    clusters: clusters.map((c) => ({
      ...c,
      origin: origins[c.name] || `http://127.0.0.1:${upstreams[c.name].port}`,
    })),
  });
}

function stepNamed(name) {
  const s = vectors.steps.find((s) => s.name === name);
  assert.ok(s, `step ${name} in vectors.json`);
  return s;
}

function capnpString(s) {
  return JSON.stringify(s); // a JSON string literal is a valid Cap'n Proto text literal here
}

function writeConfig(envRoutes) {
  const text = `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "edge", worker = .edge),
    (name = "kv", external = (address = "127.0.0.1:${kv.port}", http = ())),
    (name = "origins", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:${edgePort}", http = (), service = "edge")],
);
const edge :Workerd.Worker = (
  modules = [
    (name = "src/worker.js", esModule = embed "../src/worker.js"),
    (name = "build/tandem_route.wasm", wasm = embed "tandem_route.wasm"),
  ],
  compatibilityDate = "2024-09-23",
  globalOutbound = "origins",
  bindings = [
    (name = "ROUTES", kvNamespace = "kv"),
    (name = "TANDEM_ROUTES", text = ${capnpString(envRoutes)}),
  ],
);
`;
  const file = path.join(buildDir, "test.capnp");
  fs.writeFileSync(file, text);
  return file;
}

function send({ method = "GET", path: p = "/", headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    if (body !== undefined) headers = { ...headers, "content-length": Buffer.byteLength(body) };
    const req = http.request(
      { host: "127.0.0.1", port: edgePort, method, path: p, headers, agent },
      (res) => {
        const chunks = [];
        res.on("data", (d) => chunks.push(d));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let json = null;
          try {
            json = JSON.parse(text);
          } catch {}
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
      },
    );
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

async function waitReady() {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      await send({ path: "/readyz" });
      return;
    } catch (e) {
      if (Date.now() > deadline) throw new Error(`workerd did not start: ${e.message}`);
      if (workerd.exitCode !== null) throw new Error(`workerd exited ${workerd.exitCode}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

before(async () => {
  if (process.env.TANDEM_ROUTE_WASM) {
    fs.mkdirSync(buildDir, { recursive: true });
    fs.copyFileSync(process.env.TANDEM_ROUTE_WASM, wasmPath);
  }
  assert.ok(fs.existsSync(wasmPath), `${wasmPath} missing: run ../test.sh, which builds it`);
  assert.ok(fs.existsSync(workerdBin), `${workerdBin} missing: npm ci`);
  for (const name of CLUSTERS) {
    upstreams[name] = upstream(name);
    upstreams[name].port = await listen(upstreams[name].server);
  }
  kv = kvServer();
  kv.port = await listen(kv.server);
  deadPort = await freePort();
  edgePort = await freePort();
  // TANDEM_ROUTES holds D2; the KV key, when set, wins.
  const config = writeConfig(routesFor(stepNamed("D2-D3 expand").clusters));
  workerd = spawn(workerdBin, ["serve", config], { stdio: ["ignore", "inherit", "inherit"] });
  await waitReady();
});

after(async () => {
  agent.destroy();
  if (workerd && workerd.exitCode === null) {
    const exited = new Promise((r) => workerd.once("exit", r));
    workerd.kill("SIGTERM");
    await exited;
  }
  for (const u of Object.values(upstreams)) u.server.close();
  if (kv) kv.server.close();
});

// Runs `fn` over `items` with at most `limit` at a time.
async function pool(items, limit, fn) {
  let next = 0;
  const workers = Array.from({ length: limit }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i], i);
    }
  });
  await Promise.all(workers);
}

// The account travels by header, query or JSON body in turn (a header
// value loses surrounding spaces and tabs in HTTP, so such accounts never
// go by header). Header bytes are the account's UTF-8, sent raw.
function requestFor(account, pin, i) {
  const headers = {};
  if (pin !== null) headers["x-dex-version"] = i % 2 ? pin : pin.toUpperCase();
  const trimmed = account.trim() === account && !/^[\t ]|[\t ]$/.test(account);
  const way = i % 4;
  if (way === 0 && trimmed) {
    headers["x-tandem-account"] = Buffer.from(account, "utf8").toString("latin1");
    return { method: "GET", path: "/v1/status", headers };
  }
  if (way === 1 || way === 0) {
    return {
      method: "DELETE",
      path: `/v1/orders/BTC-USD/o1?account=${encodeURIComponent(account)}`,
      headers,
    };
  }
  headers["content-type"] = "application/json";
  return {
    method: way === 2 ? "POST" : "PATCH",
    path: way === 2 ? "/v1/orders" : "/v1/orders/BTC-USD/o1",
    headers,
    body: JSON.stringify({ market: "BTC-USD", id: "o1", account, price: "1", qty: "1" }),
  };
}

async function routeCase(c, i) {
  const res = await send(requestFor(c.account, c.pin, i));
  const what = `account ${JSON.stringify(c.account)} pin ${c.pin}`;
  if (c.cluster === null) {
    assert.equal(res.status, 503, `${what}: ${res.text}`);
    assert.ok(res.json && typeof res.json.error === "string", `${what}: JSON error`);
    return null;
  }
  assert.equal(res.status, 200, `${what}: ${res.text}`);
  assert.equal(res.headers["x-tandem-cluster"], c.cluster, what);
  assert.equal(res.json.cluster, c.cluster, `${what}: answered by the upstream`);
  return c.cluster;
}

test("the Worker reproduces every shared vector, routes read from KV", async () => {
  let checked = 0;
  for (const step of vectors.steps) {
    kv.value = routesFor(step.clusters);
    await pool(step.cases, 8, async (c, i) => {
      await routeCase(c, i);
      checked++;
    });
  }
  assert.ok(checked > 1500, `${checked} cases`);
  kv.value = null;
});

test("without a KV key the TANDEM_ROUTES binding routes (D2)", async () => {
  kv.value = null;
  const step = stepNamed("D2-D3 expand");
  await pool(step.cases.slice(0, 120), 8, routeCase);
});

test("a weight change by KV moves exactly the accounts the vectors move", async () => {
  const from = stepNamed("D1 canary");
  const to = stepNamed("D2-D3 expand");
  const accounts = from.cases.filter((c) => c.pin === null).map((c) => c.account);
  const where = async (step) => {
    kv.value = routesFor(step.clusters);
    const out = new Map();
    await pool(accounts, 8, async (a, i) => {
      const res = await send(requestFor(a, null, i));
      out.set(a, res.headers["x-tandem-cluster"]);
    });
    return out;
  };
  const before = await where(from);
  const afterChange = await where(to);
  const moved = accounts.filter((a) => before.get(a) !== afterChange.get(a));
  for (const a of moved) {
    assert.equal(before.get(a), "aws", `${a} left aws`);
    assert.equal(afterChange.get(a), "gcp", `${a} went to gcp`);
  }
  const share = moved.length / accounts.length;
  // 95/5 -> 70/30 must move 25 % of accounts; 300 accounts leave noise.
  assert.ok(share > 0.15 && share < 0.35, `moved ${(share * 100).toFixed(1)} %`);
  kv.value = null;
});

test("x-dex-version pins in any case, anything else is no pin", async () => {
  kv.value = routesFor(stepNamed("D1 canary").clusters);
  for (const v of ["canary", "CANARY", " Canary "]) {
    const res = await send({ headers: { "x-dex-version": v } });
    assert.equal(res.headers["x-tandem-cluster"], "gcp", v);
  }
  for (let i = 0; i < 20; i++) {
    const res = await send({ headers: { "x-dex-version": "stable", "x-tandem-account": `p${i}` } });
    assert.equal(res.headers["x-tandem-cluster"], "aws");
  }
  // "beta" is no pin: unpinned split, so azure (weight 0) is never chosen.
  for (let i = 0; i < 50; i++) {
    const res = await send({ headers: { "x-dex-version": "beta" } });
    assert.notEqual(res.headers["x-tandem-cluster"], "azure");
  }
  kv.value = routesFor(stepNamed("stable only").clusters);
  const res = await send({ headers: { "x-dex-version": "canary" } });
  assert.equal(res.status, 503);
  assert.match(res.json.error, /canary/);
  kv.value = null;
});

test("requests without an account split by weight", async () => {
  kv.value = routesFor(stepNamed("D4 balance").clusters); // 45/45/10
  const counts = { aws: 0, gcp: 0, azure: 0 };
  const n = 2000;
  await pool(Array.from({ length: n }), 16, async () => {
    const res = await send({ path: "/v1/markets/BTC-USD/book" });
    counts[res.headers["x-tandem-cluster"]]++;
  });
  const pct = (x) => (100 * x) / n;
  assert.ok(Math.abs(pct(counts.aws) - 45) < 5, JSON.stringify(counts));
  assert.ok(Math.abs(pct(counts.gcp) - 45) < 5, JSON.stringify(counts));
  assert.ok(Math.abs(pct(counts.azure) - 10) < 3, JSON.stringify(counts));
  kv.value = null;
});

test("method, path, query, headers and body reach the origin; its answer comes back", async () => {
  kv.value = routesFor(stepNamed("D1 canary").clusters);
  const body = JSON.stringify({ account: "alice", market: "BTC-USD", note: "zoë ✓" });
  for (const method of ["POST", "PUT", "PATCH", "DELETE"]) {
    const res = await send({
      method,
      path: "/created/v1/orders?depth=5&x=%20y",
      headers: { "content-type": "application/json", "x-custom": "kept", "x-tandem-min-seq": "0:7" },
      body,
    });
    assert.equal(res.status, 201, method);
    assert.equal(res.headers["x-upstream"], res.headers["x-tandem-cluster"]);
    assert.equal(res.headers["x-tandem-seq"], "0:42");
    const seen = res.json;
    assert.equal(seen.method, method, `${method}: ${res.text}`);
    assert.equal(seen.url, "/created/v1/orders?depth=5&x=%20y");
    assert.equal(seen.body, body, method);
    assert.equal(seen.headers["x-custom"], "kept");
    assert.equal(seen.headers["x-tandem-min-seq"], "0:7");
    assert.equal(seen.headers["content-type"], "application/json");
  }
  const res = await send({ method: "GET", path: "/v1/orders/BTC-USD/o1?account=alice" });
  assert.equal(res.json.method, "GET");
  assert.equal(res.json.body, "");
  kv.value = null;
});

test("a cluster that refuses connections is skipped for the next in the ranking", async () => {
  const step = stepNamed("D5 done");
  // aws is down: its accounts go to their second choice; others stay.
  kv.value = routesFor(step.clusters, { aws: `http://127.0.0.1:${deadPort}` });
  const cases = step.cases.filter((c) => c.pin === null).slice(0, 60);
  await pool(cases, 8, async (c, i) => {
    const res = await send(requestFor(c.account, null, i));
    assert.equal(res.status, 200, res.text);
    if (c.cluster === "aws") assert.notEqual(res.headers["x-tandem-cluster"], "aws");
    else assert.equal(res.headers["x-tandem-cluster"], c.cluster);
  });
  // Pinned to stable, and the only stable cluster is down: 502.
  const res = await send({ headers: { "x-dex-version": "stable" } });
  assert.equal(res.status, 502);
  assert.match(res.json.error, /aws/);
  kv.value = null;
});

test("bad routes, oversized accounts and bodies are clear errors", async () => {
  kv.value = "{not json";
  let res = await send();
  assert.equal(res.status, 503);
  assert.match(res.json.error, /routing config/);
  kv.value = JSON.stringify({ clusters: [{ name: "aws", role: "beta", weight: 1, origin: "http://x" }] });
  res = await send();
  assert.equal(res.status, 503);
  assert.match(res.json.error, /role/);
  kv.value = routesFor(stepNamed("D0 warm-up").clusters.map((c) => ({ ...c, weight: 0 })));
  res = await send();
  assert.equal(res.status, 503);
  assert.match(res.json.error, /weight/);
  kv.value = routesFor(stepNamed("D1 canary").clusters);
  res = await send({ path: `/v1/status?account=${"a".repeat(5000)}` });
  assert.equal(res.status, 400);
  res = await send({ method: "POST", path: "/v1/orders", body: "x".repeat((1 << 20) + 1) });
  assert.equal(res.status, 413);
  kv.value = null;
});

test("an origin's own x-tandem-cluster is kept; x-tandem-worker-cluster is the Worker's choice", async () => {
  kv.value = routesFor(stepNamed("D4 balance").clusters); // 45/45/10
  const seen = new Set();
  await pool(Array.from({ length: 60 }, (_, i) => i), 8, async (i) => {
    // An origin that is a Tandem edge names its own cluster.
    let res = await send({ path: `/inner/v1/status?account=a${i}` });
    assert.equal(res.status, 200, res.text);
    const chose = res.json.cluster;
    assert.equal(res.headers["x-tandem-cluster"], `${chose}-inner`, res.text);
    assert.equal(res.headers["x-tandem-worker-cluster"], chose);
    seen.add(chose);
    // An origin without the header (or with it empty): the Worker's choice.
    res = await send({ path: `/v1/status?account=a${i}` });
    assert.equal(res.headers["x-tandem-cluster"], res.json.cluster);
    assert.equal(res.headers["x-tandem-worker-cluster"], res.json.cluster);
    res = await send({ path: `/inner-empty/v1/status?account=a${i}` });
    assert.equal(res.headers["x-tandem-cluster"], res.json.cluster);
  });
  assert.ok(seen.size >= 2, `accounts split over ${[...seen]}`);
  kv.value = null;
});
