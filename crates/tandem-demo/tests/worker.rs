//! `tandem demo --worker`: the real Cloudflare Worker (deploy/cloudflare's
//! worker.js and tandem_route.wasm in workerd) in front of the edge, in
//! the shortest scenario, `divergent-canary`. Checks that the load went
//! through the Worker (workerd's own count of the Worker's invocations
//! covers every answered request) and that the clusters behind the edge
//! are still told apart at the client (the Worker keeps the edge's
//! `x-tandem-cluster`: aws has a share, no phase shows the Worker's one
//! origin as a cluster), and that the Worker's added latency was measured.
//!
//! Needs the `tandem` binary (`cargo build -p tandem-cli`), tansu, workerd
//! (`npm ci` in deploy/cloudflare, or `WORKERD_BIN`) and the wasm module
//! (`deploy/cloudflare/build.sh`, or `TANDEM_ROUTE_WASM`). Without workerd
//! or the module the test says why and passes, except when `CI` is set
//! (scripts/test.sh installs both first): then it fails.

use std::process::Command;

use tandem_log::conformance::TempDir;

#[test]
fn the_load_goes_through_the_worker_and_clusters_are_still_attributed() {
    if let Err(e) = tandem_demo::worker::find() {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set and the Worker's parts are missing: {e}");
        }
        eprintln!("SKIPPED: the Cloudflare Worker's parts are missing: {e}");
        return;
    }
    let bin = tandem_control::supervise::target_binary("tandem", "TANDEM_BIN");
    let dir = TempDir::new("demo-worker");
    let out = dir.path().join("out");
    let json = dir.path().join("report.json");
    let mut cmd = Command::new(bin);
    cmd.args([
        "demo",
        "--scenario",
        "divergent-canary",
        "--worker",
        "--out",
    ])
    .arg(&out)
    .arg("--json")
    .arg(&json);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("TANDEM_") {
            cmd.env_remove(k);
        }
    }
    let o = cmd.output().expect("run tandem demo");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let body = std::fs::read_to_string(&json)
        .unwrap_or_else(|e| panic!("no {}: {e}\n{text}", json.display()));
    let r: serde_json::Value = serde_json::from_str(body.trim()).expect("one JSON object");
    assert_eq!(o.status.code(), Some(0), "{text}\n{r}");
    assert_eq!(r["result"], "rolled_back", "{r}");
    assert!(r["divergence"]["seq"].as_u64().is_some(), "{r}");
    assert_eq!(r["failed_requests"], 0, "{r}");

    // Every request the client got an answer for went through the Worker
    // (the load's read-backs add more), each invocation ended ok.
    let w = &r["worker"];
    let served = w["requests"].as_u64().expect("the Worker's count");
    let answered = r["requests"].as_u64().unwrap() - r["failed_requests"].as_u64().unwrap();
    assert!(answered > 100, "{r}");
    assert!(
        served >= answered,
        "the Worker served {served}, the client had {answered} answers: {w}"
    );
    assert_eq!(w["outcomes"]["ok"].as_u64(), Some(served), "{w}");
    let origin = w["origin"].as_str().expect("origin");
    let listen = w["listen"].as_str().expect("listen");
    assert_ne!(origin, listen);
    assert!(
        text.contains(&format!("Cloudflare Worker (workerd) at {listen}")),
        "{text}"
    );

    // The hop the Worker adds, measured by pairs after the load.
    let probe = &w["probe"];
    assert!(probe["pairs"].as_u64().unwrap_or(0) >= 250, "{w}");
    for k in ["direct_p50_ms", "worker_p50_ms"] {
        assert!(probe[k].as_f64().unwrap_or(0.0) > 0.0, "{k}: {w}");
    }

    // Attribution: the clusters behind the edge, never the Worker's origin.
    let phases = r["phases"].as_array().expect("phases");
    assert!(!phases.is_empty(), "{r}");
    for p in phases {
        let share = p["share"].as_object().expect("share");
        assert!(!share.contains_key("tandem-edge"), "{p}");
        for k in share.keys() {
            assert!(["aws", "gcp", "azure"].contains(&k.as_str()), "{p}");
        }
    }
    let aws = phases[0]["share"]["aws"].as_f64().unwrap_or(0.0);
    assert!(aws > 0.9, "warm-up: aws alone has weight: {}", phases[0]);

    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(
        md.contains(&format!("served {served} requests")),
        "report.md names the Worker's count"
    );
}
