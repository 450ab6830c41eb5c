//! Starting a local `tansu` broker (a Kafka-protocol broker from crates.io)
//! for tests and benchmarks: one place for its command line and the wait
//! until it accepts connections.

use std::ffi::OsString;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to install the broker this module runs.
pub const INSTALL: &str = "cargo install tansu --version 0.6.0 --features dynostore,libsql";

/// The broker binary: `$TANSU_BIN`, else `tansu` on the PATH.
pub fn bin() -> OsString {
    std::env::var_os("TANSU_BIN").unwrap_or_else(|| "tansu".into())
}

/// Starts `tansu broker` in `dir` (its SQLite file and `tansu.log` live
/// there) listening on `port` and advertising `advertised` (the same port,
/// or a proxy's), and waits until it accepts a connection. Fails if it
/// cannot start, exits (with the tail of its log), or is not listening
/// within 20 s.
pub fn spawn(dir: &Path, port: u16, advertised: u16) -> Result<Child, String> {
    let bin = bin();
    let log_path = dir.join("tansu.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("broker log {}: {e}", log_path.display()))?;
    let err_log = log
        .try_clone()
        .map_err(|e| format!("broker log {}: {e}", log_path.display()))?;
    let mut child = Command::new(&bin)
        .current_dir(dir)
        .args(["broker", "--listener-url"])
        .arg(format!("tcp://127.0.0.1:{port}"))
        .arg("--advertised-listener-url")
        .arg(format!("tcp://127.0.0.1:{advertised}"))
        .args(["--storage-engine", "sqlite://tansu.db"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err_log)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run {bin:?} ({e}): install it with `{INSTALL}` (or point TANSU_BIN at it)"
            )
        })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let out = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: String = out
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(format!(
                "tansu exited with {status} on port {port}:\n{tail}"
            ));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("tansu did not listen on port {port} within 20 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
