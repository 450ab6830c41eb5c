//! The API description fuzzed against real processes: a `tandem node` on
//! a file log in a temporary directory, and a `tandem edge` in front of it
//! (both run by `tandem_control::supervise`).
//!
//! - The edge serves its own description at `/openapi.json`
//!   (`tandem_edge::openapi`: the node's with the edge's own answers) and
//!   forwards every other described operation to the node, which answers
//!   it as it answers the node's own client.
//! - Schemathesis (PyPI `schemathesis`, pinned in `SCHEMATHESIS` and
//!   installed by `scripts/test.sh`) runs from each served description,
//!   first against the node, then against the edge, and finds no 5xx and
//!   no answer outside the description: status, headers, content type and
//!   body schema of every answer, and 405 with `allow` for every method a
//!   described path does not take. Each run is bounded by `--max-examples`
//!   (about 15 s on 2 cores) and killed past `SCHEMATHESIS_LIMIT`.
//!
//! Needs the `tandem` binary (`cargo build -p tandem-cli`, or `TANDEM_BIN`)
//! and the `schemathesis` command; fails naming how to get either.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tandem_control::supervise::{target_binary, Supervised};
use tandem_log::conformance::TempDir;

/// The Schemathesis release `scripts/test.sh` installs.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

/// Longest one Schemathesis run may take before the test kills it and fails.
const SCHEMATHESIS_LIMIT: Duration = Duration::from_secs(240);

/// Test cases per operation and phase.
const MAX_EXAMPLES: u32 = 40;

/// Schemathesis's configuration: `not_a_server_error` takes 503 as the
/// API's documented "not now" (replica catching up, `x-tandem-min-seq` not
/// reached within `wait_ms`, overload: always with `retry-after`); whether
/// an operation may answer 503, and with which headers, is still checked by
/// `status_code_conformance` and `response_headers_conformance`. Any other
/// 5xx fails.
const CONFIG: &str = "[checks.not_a_server_error]\n\
                      expected-statuses = [\"2xx\", \"3xx\", \"4xx\", \"503\"]\n";

/// The checks every answer is held to (Schemathesis's names).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_headers_conformance,response_schema_conformance,\
                      unsupported_method,allow_header_conformance";

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

/// One HTTP/1.1 request on a fresh connection: (status, headers in
/// lowercase, body).
fn call(addr: SocketAddr, method: &str, path: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the answer");
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer head");
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head[9..12].parse().expect("a status");
    // Bodies here are small and sent with content-length.
    (status, head, raw[end + 4..].to_vec())
}

/// The Schemathesis command, or a failure naming how to install it.
fn schemathesis() -> Command {
    let ok = Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "schemathesis is missing: this test runs it. Install it with \
         `python3 -m pip install {SCHEMATHESIS}` (then `pyenv rehash` under pyenv); \
         scripts/test.sh does this"
    );
    Command::new("schemathesis")
}

/// Runs Schemathesis from the description served at `base/openapi.json`;
/// panics with its report unless it tested all `operations` and found
/// nothing. Its output and
/// Hypothesis's database go to `work`.
fn run_schemathesis(base: &str, work: &Path, operations: usize) {
    std::fs::create_dir_all(work).unwrap();
    let out = work.join("schemathesis.txt");
    let config = work.join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let mut cmd = schemathesis();
    cmd.current_dir(work)
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(&config)
        .args([
            "run",
            &format!("{base}/openapi.json"),
            "--checks",
            CHECKS,
            "--max-examples",
            &MAX_EXAMPLES.to_string(),
            "--seed",
            "20261205",
            "--workers",
            "1",
            "--request-timeout",
            "10",
        ]);
    let started = Instant::now();
    let mut st = Supervised::start_logged("schemathesis", cmd, &out).expect("start schemathesis");
    let status = loop {
        if let Some(s) = st.try_exit() {
            break s;
        }
        if started.elapsed() > SCHEMATHESIS_LIMIT {
            st.kill();
            panic!(
                "schemathesis ran past {SCHEMATHESIS_LIMIT:?} against {base}:\n{}",
                st.log_tail(8000)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let report = std::fs::read_to_string(&out).unwrap_or_default();
    let summary: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .filter(|l| !l.trim().is_empty())
        .collect();
    println!(
        "schemathesis against {base}, {:.1} s:\n{}",
        started.elapsed().as_secs_f64(),
        summary.join("\n")
    );
    assert!(
        status.success(),
        "schemathesis found failures against {base} ({status}):\n{report}"
    );
    let tested: Option<usize> = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Tested:"))
        .and_then(|n| n.trim().parse().ok());
    assert_eq!(
        tested,
        Some(operations),
        "schemathesis did not test every operation against {base}:\n{report}"
    );
}

/// A `tandem node` process on a file log in `dir`.
fn start_node(bin: &Path, dir: &Path, addr: SocketAddr) -> Supervised {
    let config = dir.join("node.toml");
    // Short waits: Schemathesis sends `x-tandem-min-seq` tokens far ahead,
    // each answered 503 once `wait_ms` has passed.
    std::fs::write(
        &config,
        format!(
            "config_version = 1\nlisten = \"{addr}\"\nnode = \"fuzz\"\ndata_dir = \"{}\"\n\
             [log]\nfsync = false\n[limits]\nwait_ms = 200\n[http]\ndrain_grace_ms = 0\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("node").arg("--config").arg(&config);
    let mut p =
        Supervised::start_logged("tandem node", cmd, &dir.join("node.log")).expect("start node");
    if let Err(e) = p.wait_http_ready(addr, "/readyz", Duration::from_secs(30)) {
        panic!("the node did not come up: {e}\n{}", p.log_tail(4000));
    }
    p
}

/// A `tandem edge` process whose one cluster is the node at `node`.
fn start_edge(bin: &Path, dir: &Path, public: SocketAddr, node: SocketAddr) -> Supervised {
    let config = dir.join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{public}\"\nadmin_listen = \"{}\"\nzone = \"z-a\"\ndrain_timeout_secs = 2\n\
             [health]\ninterval_ms = 100\ntimeout_ms = 500\n\
             [[clusters]]\nname = \"c0\"\nversion = \"0.1.0\"\nrole = \"stable\"\nweight = 100\n\
             nodes = [{{ addr = \"{node}\", zone = \"z-a\" }}]\n",
            free_addr()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("edge")
        .arg("--config")
        .arg(&config)
        .env_remove("TANDEM_EDGE_ADMIN_TOKEN");
    let mut p =
        Supervised::start_logged("tandem edge", cmd, &dir.join("edge.log")).expect("start edge");
    // Ready once a health check has seen the node: /readyz goes through.
    if let Err(e) = p.wait_http_ready(public, "/readyz", Duration::from_secs(30)) {
        panic!("the edge did not come up: {e}\n{}", p.log_tail(4000));
    }
    p
}

#[test]
fn schemathesis_finds_nothing_against_a_node_and_an_edge_in_front_of_it() {
    let _ = schemathesis();
    let bin = target_binary("tandem", "TANDEM_BIN");
    let dir = TempDir::new("edge-openapi");
    let (node_addr, edge_addr) = (free_addr(), free_addr());
    let mut node = start_node(&bin, dir.path(), node_addr);
    let mut edge = start_edge(&bin, dir.path(), edge_addr, node_addr);

    // The edge's description is its own; every other described operation
    // is forwarded (the answer names the cluster) and answered as the node
    // answers it.
    let (status, head, body) = call(edge_addr, "GET", "/openapi.json");
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, tandem_edge::openapi::document().as_bytes());
    let doc: Value = serde_json::from_slice(&body).unwrap();
    let mut forwarded = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path == "/openapi.json" {
            continue;
        }
        let path = path
            .replace("{market}", "BTC-USD")
            .replace("{id}", "o1")
            .replace("{partition}", "0");
        for method in ["get", "post", "patch", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let m = method.to_ascii_uppercase();
            let (direct, _, _) = call(node_addr, &m, &path);
            let (via_edge, head, _) = call(edge_addr, &m, &path);
            assert_eq!(via_edge, direct, "{m} {path} through the edge: {head}");
            assert!(
                head.contains("\r\nx-tandem-cluster: c0"),
                "{m} {path} was not forwarded: {head}"
            );
            forwarded += 1;
        }
    }
    assert_eq!(forwarded, tandem_node::api::ROUTES.len() - 1);

    // Schemathesis leaves out the operation that serves the description
    // it was loaded from (`GET /openapi.json`).
    let ops = tandem_node::api::ROUTES.len() - 1;
    run_schemathesis(
        &format!("http://{node_addr}"),
        &dir.path().join("st-node"),
        ops,
    );
    run_schemathesis(
        &format!("http://{edge_addr}"),
        &dir.path().join("st-edge"),
        ops,
    );

    for (name, p) in [("node", &mut node), ("edge", &mut edge)] {
        assert!(
            p.try_exit().is_none(),
            "the {name} exited under the fuzzing:\n{}",
            p.log_tail(4000)
        );
        let log = std::fs::read_to_string(dir.path().join(format!("{name}.log"))).unwrap();
        assert!(!log.contains("panicked"), "the {name} panicked:\n{log}");
    }
}
