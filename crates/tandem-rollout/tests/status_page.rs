//! The controller's status page in a real browser (Debian's `chromium`,
//! headless): the page shows the phase, stage and weights that `/status`
//! gives, and follows them when they change. `scripts/test.sh` installs
//! chromium when it is missing; without it this test fails and says so.

use std::collections::{BTreeMap, VecDeque};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_rollout::status::{self, EdgeStatus, Shared, Status};

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "google-chrome"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_owned();
        }
    }
    panic!(
        "no chromium on PATH: install it with `apt-get install -y chromium` (scripts/test.sh does)"
    );
}

/// The page's DOM after its script has fetched `/status`.
fn dump_dom(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("tandem-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            // Lets the page's fetch and its rendering finish before the dump.
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(phase: &str, index: usize, weights: [u32; 3]) -> Status {
    let w: BTreeMap<String, u32> = [
        ("aws", weights[0]),
        ("gcp", weights[1]),
        ("azure", weights[2]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Status {
        release: "match-engine v2".into(),
        t_ms: 1,
        phase: phase.into(),
        phase_index: index,
        phases: 5,
        stage: "hold".into(),
        stage_reason: None,
        weights: Some(w.clone()),
        edges: vec![EdgeStatus {
            url: "http://127.0.0.1:8001".into(),
            weights: Some(w),
        }],
        hold_left_ms: Some(4_000),
        gates: BTreeMap::new(),
        decisions: VecDeque::new(),
    }
}

/// The text of the element with this id in a dumped DOM.
fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\">");
    let at = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no #{id} in:\n{dom}"))
        + open.len();
    let end = dom[at..].find('<').map_or(dom.len(), |e| at + e);
    &dom[at..end]
}

/// A weights row as the page renders it: the label, then each cluster's
/// weight in the JSON object's order.
fn row(label: &str, weights: &serde_json::Value) -> String {
    let cells: String = weights
        .as_object()
        .expect("weights object")
        .values()
        .map(|v| format!("<td>{v}</td>"))
        .collect();
    format!("<tr><td>{label}</td>{cells}</tr>")
}

#[test]
fn the_page_shows_what_the_json_shows_and_follows_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    let shared = Arc::new(Shared {
        status: Mutex::new(status("canary", 1, [95, 5, 0])),
        commands: tx,
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(status::serve(listener, Arc::clone(&shared)));
    let url = format!("http://{addr}/");

    let json: serde_json::Value = serde_json::from_str(&shared.json()).expect("json");
    let dom = dump_dom(&url);
    assert_eq!(text_of(&dom, "phase"), json["phase"].as_str().unwrap());
    assert_eq!(text_of(&dom, "stage"), "hold");
    assert_eq!(text_of(&dom, "release"), "match-engine v2");
    assert_eq!(text_of(&dom, "index"), "2 of 5");
    // The weights table: the controller's row and the edge's row, in the
    // JSON's order of clusters.
    assert!(dom.contains(&row("controller", &json["weights"])), "{dom}");
    assert!(dom.contains(&row("http://127.0.0.1:8001", &json["edges"][0]["weights"])));
    assert!(dom.contains(&row(
        "controller",
        &serde_json::json!({"aws": 95, "azure": 0, "gcp": 5})
    )));

    // The controller moves on: the page follows.
    *shared.status.lock().unwrap() = status("expand", 2, [70, 30, 0]);
    let dom = dump_dom(&url);
    assert_eq!(text_of(&dom, "phase"), "expand");
    let json: serde_json::Value = serde_json::from_str(&shared.json()).expect("json");
    assert!(dom.contains(&row("controller", &json["weights"])), "{dom}");
    assert!(
        dom.contains("<td>controller</td><td>70</td><td>0</td><td>30</td>"),
        "{dom}"
    );
    drop(rt);
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn the_terminal_view_shows_phase_weights_hold_and_gates() {
    let mut s = status("canary", 1, [95, 5, 0]);
    s.gates.insert(
        "gcp".into(),
        tandem_rollout::timeline::GateValues {
            p99_ms: Some(3.25),
            error_ratio: Some(0.0),
            requests: 812,
            lag: 0,
            hash_agrees: true,
        },
    );
    s.edges.push(EdgeStatus {
        url: "http://127.0.0.1:8002".into(),
        weights: None,
    });
    let v = status::terminal_view(&s);
    assert!(v.contains("phase canary (2 of 5), hold, 4.0 s left"), "{v}");
    // Clusters in the weights' order: aws, azure, gcp.
    assert!(v.contains("controller        95       0       5"), "{v}");
    assert!(v.contains("edge 1            95       0       5"), "{v}");
    assert!(
        v.contains("edge 2      unreachable (http://127.0.0.1:8002)"),
        "{v}"
    );
    assert!(
        v.contains("gcp             3.25      0.0000       812       0  agrees"),
        "{v}"
    );
}
