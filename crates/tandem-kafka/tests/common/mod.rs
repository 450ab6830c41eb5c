//! Helpers shared by the integration tests: a real Kafka-protocol broker
//! (`tansu`, SQLite storage) on a free loopback port, killed on drop, and a
//! [`Fixture`] that gives each check a fresh topic on its own broker.
//!
//! The broker binary is `$TANSU_BIN` or `tansu` on `PATH`. If it is missing
//! the tests fail, naming the install command: they are never skipped.

#![allow(dead_code)] // Each test binary uses its own part of this module.

use std::net::TcpListener;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use tandem_kafka::{create_topic, KafkaLog, KafkaLogConfig};
use tandem_log::conformance::Fixture;
use tandem_log::Log;

pub use tandem_log::conformance::TempDir;

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// One `tansu broker` process over a SQLite file in its own directory.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Broker {
    /// Starts a broker on a free port and waits until it accepts
    /// connections.
    pub fn start() -> Broker {
        let dir = TempDir::new("tansu");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            match spawn(dir.path(), port) {
                Ok(child) => {
                    return Broker {
                        child: Some(child),
                        port,
                        dir,
                    }
                }
                // Most likely another test took the port between our probe
                // and the broker's bind: try another.
                Err(e) => last = e,
            }
        }
        panic!("tansu broker did not start: {last}");
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the broker, leaves it down for `down`, and starts it again on
    /// the same port and SQLite file.
    pub fn restart(&mut self, down: Duration) {
        self.kill();
        std::thread::sleep(down);
        self.start_again();
    }

    /// Starts a killed broker again on the same port and SQLite file.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "broker still running");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match spawn(self.dir.path(), self.port) {
                Ok(c) => {
                    self.child = Some(c);
                    return;
                }
                Err(e) if Instant::now() > deadline => panic!("tansu restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Creates `topic` with `partitions` partitions (replication 1).
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        create_topic(
            &self.bootstrap(),
            topic,
            partitions,
            1,
            &[],
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("create topic {topic}: {e}"));
    }

    /// The log config for `topic`/`partition`, with test-sized timeouts.
    pub fn config(&self, topic: &str, partition: u32) -> KafkaLogConfig {
        let mut c = KafkaLogConfig::new(&self.bootstrap(), topic, partition);
        c.delivery_timeout = Duration::from_secs(20);
        c.request_timeout = Duration::from_secs(10);
        c
    }

    /// Opens a log over `topic`/`partition`.
    pub fn open(&self, topic: &str, partition: u32) -> KafkaLog {
        KafkaLog::open(self.config(topic, partition))
            .unwrap_or_else(|e| panic!("open KafkaLog {topic}/{partition}: {e}"))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts `tansu broker` in `dir` on `port` (see `tandem_kafka::tansu`).
fn spawn(dir: &Path, port: u16) -> Result<Child, String> {
    tandem_kafka::tansu::spawn(dir, port, port)
}

/// A fresh one-partition topic on its own broker; `open` gives a new
/// `KafkaLog` (a new producer and consumer) over the same partition.
#[derive(Debug)]
pub struct KafkaFixture {
    pub broker: Broker,
    pub topic: String,
}

impl KafkaFixture {
    pub fn new() -> KafkaFixture {
        let broker = Broker::start();
        let topic = "orders".to_owned();
        broker.create_topic(&topic, 1);
        KafkaFixture { broker, topic }
    }

    pub fn open_kafka(&self) -> KafkaLog {
        self.broker.open(&self.topic, 0)
    }
}

impl Fixture for KafkaFixture {
    fn open(&self) -> Box<dyn Log> {
        Box::new(self.open_kafka())
    }
}

/// The conformance suite's factory.
pub fn new_fixture() -> Box<dyn Fixture> {
    Box::new(KafkaFixture::new())
}
