//! A SIGTERM or SIGHUP that arrives the moment an edge first answers is
//! acted on (drain and exit 0; reload and keep serving), never the
//! signal's default action, which kills. The edge used to install its
//! handlers only after its listeners served. The test signals at the
//! first `/healthz` answer, several times over. (Against the old edge it
//! did not fail here: its window was narrower than the node's, whose own
//! test, `tandem-node`'s `tests/signals.rs`, failed at once.)

use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use tandem_control::supervise::{http_status, target_binary, Supervised};
use tandem_log::conformance::TempDir;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Starts an edge (one cluster, one node that is not running) and waits
/// until its public `/healthz` answers, polling without a pause.
fn edge_at_first_answer(dir: &TempDir, round: u32) -> (Supervised, std::path::PathBuf) {
    let public = free_addr();
    let admin = free_addr();
    let node = free_addr();
    let config = dir.path().join(format!("edge-{round}.toml"));
    std::fs::write(
        &config,
        format!(
            "config_version = 1\nlisten = \"{public}\"\nadmin_listen = \"{admin}\"\n\
             admin_token = \"t\"\nzone = \"a\"\ndrain_timeout_secs = 5\n\n\
             [[clusters]]\nname = \"aws\"\nversion = \"1\"\nrole = \"stable\"\nweight = 100\n\
             nodes = [{{ addr = \"{node}\", zone = \"a\" }}]\n"
        ),
    )
    .expect("write config");
    let log = dir.path().join(format!("edge-{round}.log"));
    let mut cmd = Command::new(target_binary("tandem", "TANDEM_BIN"));
    cmd.args(["edge", "--config"]).arg(&config);
    let mut edge = Supervised::start_logged("edge", cmd, &log).expect("start the edge");
    let deadline = Instant::now() + Duration::from_secs(60);
    while http_status(public, "/healthz").is_none() {
        assert!(edge.try_exit().is_none(), "round {round}: exited early");
        assert!(Instant::now() < deadline, "round {round}: never answered");
    }
    (edge, log)
}

#[test]
fn sigterm_at_the_first_answer_drains_and_exits_zero() {
    let dir = TempDir::new("edge-signals");
    for round in 0..5 {
        let (mut edge, log) = edge_at_first_answer(&dir, round);
        let status = edge.stop(Duration::from_secs(30)).expect("the edge stops");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(status.signal(), None, "round {round}: killed:\n{text}");
        assert!(status.success(), "round {round}: exit {status}:\n{text}");
    }
}

#[test]
fn sighup_at_the_first_answer_reloads_and_keeps_serving() {
    let dir = TempDir::new("edge-signals-hup");
    for round in 0..5 {
        let (mut edge, log) = edge_at_first_answer(&dir, round);
        edge.signal(libc::SIGHUP).expect("SIGHUP");
        std::thread::sleep(Duration::from_millis(300));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            edge.try_exit().is_none(),
            "round {round}: SIGHUP ended the edge:\n{text}"
        );
        let status = edge.stop(Duration::from_secs(30)).expect("the edge stops");
        assert!(status.success(), "round {round}: exit {status}:\n{text}");
    }
}
