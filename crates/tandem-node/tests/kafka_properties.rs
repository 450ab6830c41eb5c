//! `[log.kafka_properties]` reaching the node's Kafka clients: `tandem
//! node` processes over a real Kafka-protocol broker (`tansu`, started per
//! test on a free loopback port).
//!
//! - a harmless passthrough property (`client.id`, `socket.keepalive.enable`)
//!   and a secret from the environment: the node serves, an order is
//!   appended and read back, and the start-up line prints the secret as
//!   `<redacted>`;
//! - an unknown property name: the node exits at start with an error naming
//!   it;
//! - `security.protocol = "SSL"` against tansu's plaintext listener: the
//!   node never becomes ready, exits, and its error carries librdkafka's
//!   "timed out in state SSL_HANDSHAKE";
//!
//! A TLS handshake that succeeds is not tested: tansu 0.6 cannot serve TLS
//! from its command line (`--cert` and `--key` are declared in one clap
//! group, so giving both is refused, and it enables TLS only with both).
//! SASL is not tested either (tansu 0.6 has an `--authentication` switch but
//! no way to give it users). Both are checked only against a real cluster;
//! see deploy/kafka/README.md, "Confluent Cloud".
//!
//! The node binary is not built by these tests: they run
//! `target/<profile>/tandem` next to the test executable (or `$TANDEM_BIN`),
//! so run `cargo build -p tandem-cli` first. The broker is `$TANSU_BIN` or
//! `tansu` on the PATH (see `tandem_kafka::tansu::INSTALL`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{free_port, place_body, Broker, TempDir};

/// One broker and one node at a time, on 2 cores.
static SERIAL: Mutex<()> = Mutex::new(());

const TOPIC: &str = "orders";

/// The `tandem` binary (`TANDEM_BIN`, or beside this test executable).
fn tandem_bin() -> PathBuf {
    tandem_control::supervise::target_binary("tandem", "TANDEM_BIN")
}

/// How a node's start ended.
#[derive(Debug)]
enum Started {
    /// `/readyz` answered 200.
    Ready,
    /// The process exited first; its log.
    Exited(String),
}

/// One `tandem node` process; killed on drop.
struct NodeProc {
    addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    /// Writes a config with `[log.kafka_properties]` = `properties` (TOML
    /// lines) and starts the node with `env` added to its environment.
    fn spawn(
        dir: &Path,
        name: &str,
        bootstrap: &str,
        create_topic: bool,
        properties: &str,
        env: &[(&str, &str)],
    ) -> NodeProc {
        let data = dir.join(name);
        std::fs::create_dir_all(&data).expect("node dir");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = data.join("tandem-node.toml");
        let text = format!(
            r#"# Written by tests/kafka_properties.rs.
config_version = 1
listen = "{addr}"
node = "{name}"
cluster = "test"
zone = "test-a"
data_dir = "{state}"

[log]
kind = "kafka"
kafka_brokers = "{bootstrap}"
kafka_topic = "{TOPIC}"
kafka_partitions = 1
kafka_create_topic = {create_topic}
kafka_replication = 1
kafka_min_insync_replicas = 1

[log.kafka_properties]
{properties}

[limits]
account_rate = 0
"#,
            state = data.join("state").display(),
        );
        std::fs::write(&config, text).expect("write node config");
        let log = data.join("node.log");
        let out = std::fs::File::create(&log).expect("node log");
        let mut cmd = Command::new(tandem_bin());
        cmd.arg("node").arg("--config").arg(&config);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("TANDEM_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env.iter().copied());
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", tandem_bin().display()));
        NodeProc {
            addr,
            log,
            child: Some(child),
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `limit` for `/readyz` 200 or the process's exit. Panics
    /// if neither happens (the node neither served nor gave up).
    fn started(&mut self, limit: Duration) -> Started {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut().expect("running");
            if child.try_wait().expect("try_wait").is_some() {
                self.child = None;
                return Started::Exited(self.log_text());
            }
            if common::request(self.addr, "GET", "/readyz", &[], b"").is_ok_and(|r| r.status == 200)
            {
                return Started::Ready;
            }
            assert!(
                Instant::now() < deadline,
                "node neither ready nor exited within {limit:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Places one order and reads it back.
    fn place_and_read(&self, id: &str) {
        let body = place_body("BTC-USD", id, "alice", "buy", "100", "2");
        let r =
            common::request(self.addr, "POST", "/v1/orders", &[], body.as_bytes()).expect("place");
        assert_eq!(r.status, 200, "place: {r:?}\n{}", self.log_text());
        let path = format!("/v1/orders/BTC-USD/{id}?account=alice");
        let r = common::request(self.addr, "GET", &path, &[], b"").expect("read");
        assert_eq!(r.status, 200, "read back: {r:?}");
        assert_eq!(r.json()["id"].as_str(), Some(id), "{}", r.text());
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn create_topic(bootstrap: &str) {
    tandem_kafka::create_topic(bootstrap, TOPIC, 1, 1, &[], Duration::from_secs(20))
        .expect("create topic");
}

#[test]
fn passthrough_properties_reach_a_working_node_and_secrets_are_redacted() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new("kprops-pass");
    let broker = Broker::start(&dir.path().join("broker"));
    // `ssl.key.password` is a secret by name (so it must come from env:)
    // and unused under the default plaintext protocol.
    let mut node = NodeProc::spawn(
        dir.path(),
        "node-1",
        &broker.bootstrap(),
        true,
        "\"client.id\" = \"tandem-test-node\"\n\
         socket.keepalive.enable = true\n\
         \"ssl.key.password\" = \"env:KPROPS_TEST_SECRET\"\n",
        &[("KPROPS_TEST_SECRET", "do-not-print-me")],
    );
    match node.started(Duration::from_secs(60)) {
        Started::Ready => {}
        Started::Exited(log) => panic!("node exited:\n{log}"),
    }
    node.place_and_read("o-1");
    let log = node.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("kafka client properties"))
        .unwrap_or_else(|| panic!("no properties line:\n{log}"));
    assert!(
        line.contains("tandem-test-node") && line.contains("<redacted>"),
        "{line}"
    );
    assert!(!log.contains("do-not-print-me"), "{log}");
}

#[test]
fn an_unknown_property_stops_the_node_at_start_naming_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new("kprops-unknown");
    let broker = Broker::start(&dir.path().join("broker"));
    create_topic(&broker.bootstrap());
    for (props, needle) in [
        ("\"no.such.property\" = \"1\"\n", "no.such.property"),
        // A known name with a bad value.
        (
            "socket.keepalive.enable = \"perhaps\"\n",
            "socket.keepalive.enable",
        ),
    ] {
        let mut node =
            NodeProc::spawn(dir.path(), "node-1", &broker.bootstrap(), false, props, &[]);
        match node.started(Duration::from_secs(30)) {
            Started::Ready => panic!("node started with {props:?}"),
            Started::Exited(log) => {
                assert!(log.contains(needle), "{log}");
                assert!(!log.contains("panicked"), "{log}");
            }
        }
    }
}

#[test]
fn tls_against_a_plaintext_listener_never_becomes_ready() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = TempDir::new("kprops-ssl-plain");
    let broker = Broker::start(&dir.path().join("broker"));
    create_topic(&broker.bootstrap());
    let started = Instant::now();
    let mut node = NodeProc::spawn(
        dir.path(),
        "node-1",
        &broker.bootstrap(),
        false,
        "\"security.protocol\" = \"SSL\"\n\"socket.connection.setup.timeout.ms\" = 3000\n",
        &[],
    );
    // tansu reads the TLS ClientHello as the length of a Kafka request and
    // waits for the rest, so the handshake does not fail: it stalls until
    // librdkafka's connection setup timeout (3 s here, 30 s by default).
    // The log's metadata request gives up at its 10 s request timeout and
    // the node exits with librdkafka's last error, which names the state.
    match node.started(Duration::from_secs(40)) {
        Started::Ready => panic!("node became ready over TLS to a plaintext listener"),
        Started::Exited(log) => {
            assert!(log.contains("timed out in state SSL_HANDSHAKE"), "{log}");
            assert!(!log.contains("panicked"), "{log}");
        }
    }
    assert!(started.elapsed() < Duration::from_secs(40));
}
