//! Replacing a `tandem node` process with SIGUSR2, under load, on the file
//! log and on Kafka: the successor inherits the listening socket; on the
//! file log it waits for the old process to drain, write its final
//! snapshot and release the log's lock, then serves the same state (on
//! Kafka it starts at once beside the draining one); meanwhile new connections wait in the
//! kernel's accept queue. No request is refused or fails, the old process
//! exits by itself, and every order acknowledged before or during the
//! hand-over is there afterwards. Every request uses a new connection, so
//! a refused or reset connection would show.
//!
//! Runs the `tandem` binary beside the test executable (or `$TANDEM_BIN`):
//! build it first with `cargo build -p tandem-cli`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_port, place_body, Resp, TempDir};
use tandem_control::supervise::{signal as sig, Supervised};

/// The `tandem` binary (`TANDEM_BIN`, or beside this test executable).
fn tandem_bin() -> PathBuf {
    tandem_control::supervise::target_binary("tandem", "TANDEM_BIN")
}

/// The first node process (supervised: killed on drop) and, once known,
/// its successor (started by the first, so not our child: killed by pid on
/// drop).
struct Proc {
    sup: Supervised,
    successor: Option<u32>,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.sup.kill();
        if let Some(pid) = self.successor {
            signal(pid, "KILL");
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> std::io::Result<Resp> {
    common::request(addr, method, path, &[], body)
}

/// Polls `f` every 10 ms until it holds or `limit` passes.
fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

#[test]
fn sigusr2_replaces_a_file_log_node_under_load_refusing_nothing() {
    let dir = TempDir::new("node-handover");
    handover_under_load(&dir, "[log]\nfsync = false\n", true);
}

/// The same over Kafka (a tansu broker): no log lock to wait for, so the
/// successor starts at once and both processes serve, on one data
/// directory, until the old one has drained.
#[test]
fn sigusr2_replaces_a_kafka_node_under_load_refusing_nothing() {
    let dir = TempDir::new("node-handover-kafka");
    let broker = common::Broker::start(&dir.path().join("broker"));
    let log = format!(
        "[log]\nkind = \"kafka\"\nkafka_brokers = \"{}\"\nkafka_topic = \"handover\"\n\
         kafka_create_topic = true\nkafka_replication = 1\nkafka_min_insync_replicas = 1\n",
        broker.bootstrap()
    );
    // Kafka seqs are not counts of commands: no exact count check.
    handover_under_load(&dir, &log, false);
}

/// Starts a node with `log_config` (a `[log]` table), puts four clients'
/// orders on it, replaces it with SIGUSR2 and checks that nothing failed
/// and every acknowledged order is there (`exact`: and that the applied
/// seq is the count of acknowledged orders, as on a file log).
fn handover_under_load(dir: &TempDir, log_config: &str, exact: bool) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = dir.path().join("tandem-node.toml");
    std::fs::write(
        &config,
        format!(
            "config_version = 1\nlisten = \"{addr}\"\nnode = \"h\"\ndata_dir = \"{}\"\n\
             {log_config}[limits]\naccount_rate = 0\nwait_ms = 10000\n\
             [http]\ndrain_grace_ms = 0\ndrain_timeout_secs = 10\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("node.log");
    let mut cmd = Command::new(tandem_bin());
    cmd.arg("node").arg("--config").arg(&config);
    let mut p = Proc {
        sup: Supervised::start_logged("tandem node", cmd, &log).expect("start tandem node"),
        successor: None,
        log,
    };
    if let Err(e) = p
        .sup
        .wait_http_ready(addr, "/readyz", Duration::from_secs(30))
    {
        panic!("the node did not come up: {e}");
    }

    // Load: four clients, each placing orders on new connections until
    // told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    // Acknowledged places so far, over all clients (Kafka seqs do not
    // count commands, so progress is counted here).
    let acked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
            std::thread::spawn(move || {
                let mut placed = Vec::new();
                let mut failed = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("c{c}-{i}");
                    let body = place_body("BTC-USD", &id, &format!("a{c}"), "buy", "100", "1");
                    match request(addr, "POST", "/v1/orders", body.as_bytes()) {
                        Ok(r) if r.status == 200 => {
                            placed.push(id);
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failed.push(format!("{id}: {r}")),
                        Err(e) => failed.push(format!("{id}: {e}")),
                    }
                    i += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                (placed, failed)
            })
        })
        .collect();
    // Some orders in before the hand-over.
    let before = wait_until(Duration::from_secs(20), || {
        acked.load(Ordering::Relaxed) >= 200
    });
    assert!(before, "no load reached the node: {}", p.log());
    p.sup.signal(sig::USR2).expect("SIGUSR2");
    let handed = wait_until(Duration::from_secs(60), || p.log().contains("handed over"));
    assert!(handed, "no hand-over: {}", p.log());
    let old_log = p.log();
    let successor: u32 = old_log
        .split("\"successor\":")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok())
        .expect("successor pid in the log");
    p.successor = Some(successor);
    // The old process drains and exits by itself.
    let exited = wait_until(Duration::from_secs(60), || p.sup.try_exit().is_some());
    assert!(exited, "the old node did not exit: {}", p.log());
    // The successor serves, and load keeps flowing through it.
    let serving = wait_until(Duration::from_secs(60), || {
        request(addr, "GET", "/readyz", b"").is_ok_and(|r| r.status == 200)
    });
    assert!(serving, "the successor does not serve: {}", p.log());
    let more = acked.load(Ordering::Relaxed);
    let flowing = wait_until(Duration::from_secs(20), || {
        acked.load(Ordering::Relaxed) > more + 100
    });
    assert!(flowing, "no load through the successor: {}", p.log());
    stop.store(true, Ordering::Relaxed);
    let mut placed = Vec::new();
    let mut failed = Vec::new();
    for c in clients {
        let (p, f) = c.join().unwrap();
        placed.extend(p);
        failed.extend(f);
    }
    let log = p.log();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed across the hand-over; first: {:#?}\n{log}",
        failed.len(),
        placed.len() + failed.len(),
        &failed[..failed.len().min(10)]
    );
    // The same state: every acknowledged order is there, and the count of
    // applied commands is exactly the acknowledged places.
    for (k, id) in placed.iter().enumerate() {
        if k % 7 != 0 {
            continue;
        }
        let c = &id[1..id.find('-').unwrap()];
        let r = request(
            addr,
            "GET",
            &format!("/v1/orders/BTC-USD/{id}?account=a{c}"),
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200, "order {id} after the hand-over: {r}");
    }
    if exact {
        let applied = request(addr, "GET", "/v1/status", b"").unwrap().json()["partitions"][0]
            ["applied_seq"]
            .as_u64()
            .unwrap();
        assert_eq!(applied, placed.len() as u64, "{log}");
    }
    assert!(log.contains("\"inherited\":true"), "{log}");
    signal(successor, "TERM");
}
