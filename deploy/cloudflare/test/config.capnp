# Runs the Worker locally in workerd, on 127.0.0.1:8787, with the routes of
# the plan's D1 step pointing at three origins on loopback ports 9001-9003.
#   ./test.sh builds build/tandem_route.wasm; then
#   node_modules/@cloudflare/workerd-linux-64/bin/workerd serve test/config.capnp
# The tests (test/run.mjs) write variants of this file into build/.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "edge", worker = .edge),
    # Origins on loopback: workerd's default outbound allows public
    # addresses only.
    (name = "origins", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [(name = "http", address = "127.0.0.1:8787", http = (), service = "edge")],
);

const edge :Workerd.Worker = (
  modules = [
    (name = "src/worker.js", esModule = embed "../src/worker.js"),
    (name = "build/tandem_route.wasm", wasm = embed "../build/tandem_route.wasm"),
  ],
  compatibilityDate = "2024-09-23",
  globalOutbound = "origins",
  bindings = [
    (name = "TANDEM_ROUTES", text = "{\"clusters\":[{\"name\":\"aws\",\"role\":\"stable\",\"weight\":95,\"origin\":\"http://127.0.0.1:9001\"},{\"name\":\"gcp\",\"role\":\"canary\",\"weight\":5,\"origin\":\"http://127.0.0.1:9002\"},{\"name\":\"azure\",\"role\":\"canary\",\"weight\":0,\"origin\":\"http://127.0.0.1:9003\"}]}"),
  ],
);
