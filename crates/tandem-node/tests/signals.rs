//! A SIGTERM that arrives the moment a node first answers drains it: the
//! process exits 0 after "stopped", never by the signal's default action.
//! The node used to install its signal handlers only after its server had
//! started answering, and a Kubernetes-style stop that came in that window
//! killed it without a drain or a final snapshot (seen once while checking
//! the deployment manifests). The test hits that moment on purpose: it
//! polls `/healthz` without a pause and signals at the first 200, several
//! times over.

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

#[test]
fn sigterm_at_the_first_answer_drains_and_exits_zero() {
    let dir = TempDir::new("node-signals");
    for round in 0..5 {
        let addr = free_addr();
        let data = dir.path().join(format!("n{round}"));
        std::fs::create_dir_all(&data).expect("data dir");
        let config = data.join("tandem-node.toml");
        std::fs::write(
            &config,
            format!(
                "config_version = 1\nlisten = \"{addr}\"\nnode = \"n{round}\"\ncluster = \"test\"\n\
                 zone = \"test-a\"\ndata_dir = \"{}\"\n\n[http]\ndrain_grace_ms = 0\n",
                data.join("state").display()
            ),
        )
        .expect("write config");
        let log = data.join("node.log");
        let mut cmd = Command::new(target_binary("tandem", "TANDEM_BIN"));
        cmd.args(["node", "--config"]).arg(&config);
        let mut node = Supervised::start_logged("node", cmd, &log).expect("start the node");
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_status(addr, "/healthz") != Some(200) {
            assert!(
                node.try_exit().is_none(),
                "round {round}: the node exited before it answered"
            );
            assert!(Instant::now() < deadline, "round {round}: never answered");
        }
        // SIGTERM at once, then wait for the exit.
        let status = node.stop(Duration::from_secs(30)).expect("the node stops");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(
            status.signal(),
            None,
            "round {round}: killed by a signal:\n{text}"
        );
        assert!(status.success(), "round {round}: exit {status}:\n{text}");
        assert!(
            text.contains("\"msg\":\"stopped\""),
            "round {round}: no \"stopped\":\n{text}"
        );
    }
}
