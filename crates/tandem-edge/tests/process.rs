//! The edge as a process (`tandem edge --config FILE`), for what only a
//! process can show: replacing it under load with SIGUSR2 (the successor
//! inherits the listening sockets, the old one drains) refuses no
//! connection and fails no request, twice in a row; SIGHUP reloads the
//! clusters from the file. The client opens a new connection for every
//! request, so a refused or reset connection would show.
//!
//! Needs the `tandem` binary (`cargo build -p tandem-cli`, or
//! `TANDEM_BIN=/path/to/tandem`); without it each test says so and passes
//! vacuously.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn config_text(
    public: SocketAddr,
    admin: SocketAddr,
    nodes: &[&MockNode],
    weights: &[u32],
) -> String {
    let mut s = format!(
        "listen = \"{public}\"\nadmin_listen = \"{admin}\"\nadmin_token = \"{TOKEN}\"\nzone = \"z-a\"\ndrain_timeout_secs = 5\n\
         [health]\ninterval_ms = 100\ntimeout_ms = 200\n"
    );
    for (i, (n, w)) in nodes.iter().zip(weights).enumerate() {
        s.push_str(&format!(
            "[[clusters]]\nname = \"c{i}\"\nversion = \"0.1.0\"\nrole = \"stable\"\nweight = {w}\nnodes = [{{ addr = \"{}\", zone = \"z-a\" }}]\n",
            n.addr
        ));
    }
    s
}

/// A running `tandem edge` process and its files.
struct EdgeProcess {
    child: Child,
    dir: PathBuf,
    admin: SocketAddr,
    public: SocketAddr,
}

impl EdgeProcess {
    async fn start(
        bin: &Path,
        name: &str,
        text: impl Fn(SocketAddr, SocketAddr) -> String,
    ) -> EdgeProcess {
        let dir = std::env::temp_dir().join(format!("tandem-edge-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (public, admin) = (free_addr(), free_addr());
        std::fs::write(dir.join("edge.toml"), text(public, admin)).unwrap();
        let log = std::fs::File::create(dir.join("edge.log")).unwrap();
        let child = Command::new(bin)
            .args(["edge", "--config"])
            .arg(dir.join("edge.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tandem edge");
        let p = EdgeProcess {
            child,
            dir,
            admin,
            public,
        };
        let c = client();
        let up = async {
            loop {
                let r = send(
                    &c,
                    request("GET", &format!("http://{admin}/healthz"), &[], ""),
                )
                .await;
                if r.is_ok_and(|a| a.status == 200) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), up)
            .await
            .is_err()
        {
            panic!("the edge did not come up: {}", p.log());
        }
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("edge.log")).unwrap_or_default()
    }

    /// The pid serving the admin listener now, and the cluster weights.
    async fn routes(&self) -> (u64, Vec<u64>) {
        let r = send(
            &client(),
            request(
                "GET",
                &format!("http://{}/admin/routes", self.admin),
                &[("authorization", &format!("Bearer {TOKEN}"))],
                "",
            ),
        )
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        let w = v["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["weight"].as_u64().unwrap())
            .collect();
        (v["pid"].as_u64().unwrap(), w)
    }
}

fn signal(pid: u64, sig: &str) {
    let ok = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid}");
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_edge_process_under_load_refuses_nothing() {
    let Some(bin) = tandem_bin() else {
        eprintln!("SKIPPED: no tandem binary; run `cargo build -p tandem-cli` or set TANDEM_BIN");
        return;
    };
    let nodes = [MockNode::start("n0").await, MockNode::start("n1").await];
    let mut p = EdgeProcess::start(&bin, "handover", |pu, ad| {
        config_text(pu, ad, &[&nodes[0], &nodes[1]], &[50, 50])
    })
    .await;
    let (first_pid, _) = p.routes().await;
    assert_eq!(u64::from(p.child.id()), first_pid);
    let public = p.public;
    // A new connection per request, 300 a second, while the process is
    // replaced twice.
    let load = tokio::spawn(async move {
        paced(public, 300.0, Duration::from_secs(5), Conn::Fresh, |i| {
            (
                "POST".into(),
                "/v1/orders".into(),
                vec![],
                format!(r#"{{"market":"M","id":"o{i}","account":"a{}"}}"#, i % 50),
                None,
            )
        })
        .await
    });
    let mut pids = vec![first_pid];
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let old = *pids.last().unwrap();
        signal(old, "USR2");
        let mut new = old;
        for _ in 0..500 {
            new = p.routes().await.0;
            if new != old {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_ne!(
            new,
            old,
            "round {round}: no successor took over: {}",
            p.log()
        );
        pids.push(new);
    }
    let outcomes = load.await.unwrap();
    let last = *pids.last().unwrap();
    let log = p.log();
    signal(last, "TERM");
    assert_no_failures(
        &format!("edge replaced twice (pids {pids:?}); log:\n{log}\n"),
        &outcomes,
    );
    assert!(outcomes.len() >= 1400);
    // The first process drained and exited by itself.
    let exited = wait_until(Duration::from_secs(10), || {
        p.child.try_wait().is_ok_and(|s| s.is_some())
    })
    .await;
    assert!(exited, "the replaced edge did not exit: {log}");
    assert!(log.contains("handed over"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_clusters_from_the_file() {
    let Some(bin) = tandem_bin() else {
        eprintln!("SKIPPED: no tandem binary; run `cargo build -p tandem-cli` or set TANDEM_BIN");
        return;
    };
    let nodes = [MockNode::start("n0").await, MockNode::start("n1").await];
    let p = EdgeProcess::start(&bin, "sighup", |pu, ad| {
        config_text(pu, ad, &[&nodes[0], &nodes[1]], &[100, 0])
    })
    .await;
    let (pid, w) = p.routes().await;
    assert_eq!(w, vec![100, 0]);
    let path = p.dir.join("edge.toml");
    let reload_to =
        |weights: &[u32]| config_text(p.public, p.admin, &[&nodes[0], &nodes[1]], weights);
    std::fs::write(&path, reload_to(&[0, 100])).unwrap();
    signal(pid, "HUP");
    let mut got = w;
    for _ in 0..500 {
        got = p.routes().await.1;
        if got == [0, 100] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(got, vec![0, 100], "{}", p.log());
    let c = client();
    let a = send(
        &c,
        request("GET", &format!("http://{}/v1/status", p.public), &[], ""),
    )
    .await
    .unwrap();
    assert_eq!(a.cluster(), "c1");
    // A broken file is refused (logged) and the routes stay.
    std::fs::write(&path, "config_version = 1\n[[clusters]]\nname = 3\n").unwrap();
    signal(pid, "HUP");
    let refused = wait_until(Duration::from_secs(5), || p.log().contains("reload failed")).await;
    assert!(refused, "{}", p.log());
    assert_eq!(p.routes().await, (pid, vec![0, 100]));
}
