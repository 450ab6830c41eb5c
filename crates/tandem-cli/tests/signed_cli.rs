//! The signed-order commands of the `tandem` binary, as a user runs them
//! (README "Signed orders"): `tandem keygen`, `tandem order` against a
//! `tandem node` process with `auth = "signed"`, and `tandem verify-log`
//! over the log that node wrote, and over a copy with one record changed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::tandem;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("tandem-cli-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn path(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `tandem node` process, killed on drop.
struct NodeProc(Child);

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

fn start_node(dir: &Dir) -> (NodeProc, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nauth = \"signed\"\ndata_dir = \"{}\"\n\
             [log]\nfsync = false\n",
            dir.path("data")
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["node", "--config", &cfg])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tandem node");
    let node = NodeProc(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while get_status(port, "/readyz") != Some(200) {
        assert!(Instant::now() < deadline, "node not ready within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    (node, port)
}

#[test]
fn keygen_order_and_verify_log_as_a_user_runs_them() {
    let dir = Dir::new("signed");
    // keygen: one key per scheme, the account on standard output, the file
    // readable by its owner only, and never overwritten.
    let mut accounts = Vec::new();
    for scheme in ["ed25519", "eip712"] {
        let key = dir.path(&format!("{scheme}.key"));
        let (code, out, err) = tandem(&["keygen", "--scheme", scheme, "--out", &key]);
        assert_eq!(code, 0, "{err}");
        let account = out.trim().to_string();
        let prefix = if scheme == "ed25519" {
            "ed25519:"
        } else {
            "0x"
        };
        assert!(account.starts_with(prefix), "{account}");
        let text = std::fs::read_to_string(&key).unwrap();
        assert!(text.contains(&account), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (code, _, err) = tandem(&["keygen", "--scheme", scheme, "--out", &key]);
        assert_eq!(code, 1, "an existing key file is not overwritten: {err}");
        assert_eq!(std::fs::read_to_string(&key).unwrap(), text);
        accounts.push((scheme, key, account));
    }
    let (code, _, err) = tandem(&["keygen", "--scheme", "rsa"]);
    assert_eq!(code, 2, "{err}");

    let (node, port) = start_node(&dir);
    let url = format!("http://127.0.0.1:{port}");
    for (scheme, key, account) in &accounts {
        let id = format!("o-{scheme}");
        let (code, out, err) = tandem(&[
            "order", "place", "--key", key, "--node", &url, "--market", "BTC-USD", "--id", &id,
            "--side", "buy", "--price", "100.50", "--qty", "2",
        ]);
        assert_eq!(code, 0, "{scheme}: {out} {err}");
        assert!(out.contains("\"accepted\""), "{out}");
        let (code, out, err) = tandem(&[
            "order", "amend", "--key", key, "--node", &url, "--market", "BTC-USD", "--id", &id,
            "--qty", "1",
        ]);
        assert_eq!(code, 0, "{scheme}: {out} {err}");
        assert!(out.contains("\"amended\""), "{out}");
        let (code, out, err) = tandem(&[
            "order", "cancel", "--key", key, "--node", &url, "--market", "BTC-USD", "--id", &id,
        ]);
        assert_eq!(code, 0, "{scheme}: {out} {err}");
        assert!(out.contains("\"cancelled\""), "{out}");
        // The order is the key's account's.
        let status = get_status(port, &format!("/v1/orders/BTC-USD/{id}?account={account}"));
        assert_eq!(status, Some(200));
    }
    // A signature the node refuses: expiry beyond its 300 s bound.
    let (code, out, err) = tandem(&[
        "order",
        "place",
        "--key",
        &accounts[0].1,
        "--node",
        &url,
        "--market",
        "BTC-USD",
        "--id",
        "late",
        "--side",
        "sell",
        "--price",
        "1",
        "--qty",
        "1",
        "--expires-in",
        "3600",
    ]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(out.contains("x-tandem-expiry"), "{out}");
    assert!(err.contains("400"), "{err}");
    // Bad flags are usage errors.
    let (code, _, _) = tandem(&[
        "order", "cancel", "--key", "k", "--node", &url, "--side", "buy",
    ]);
    assert_eq!(code, 2);
    drop(node);

    // verify-log over the node's file log: six signed records.
    let log = dir.path("data/log");
    let (code, out, err) = tandem(&["verify-log", "--log", &log, "--require-signed"]);
    assert_eq!(code, 0, "{out} {err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            v["records"].as_u64(),
            v["signed"].as_u64(),
            v["ok"].as_bool()
        ),
        (Some(6), Some(6), Some(true)),
        "{out}"
    );
    // Another chain id: the first record fails.
    let (code, _, err) = tandem(&["verify-log", "--log", &log, "--chain-id", "5"]);
    assert_eq!(code, 1);
    assert!(err.contains("record 1 "), "{err}");
    // The node's config names the same log (and the chain id, 1).
    let cfg = dir.path("node.toml");
    let (code, by_config, err) = tandem(&["verify-log", "--config", &cfg, "--require-signed"]);
    assert_eq!((code, by_config), (0, out.clone()), "{err}");
    let (code, _, err) = tandem(&["verify-log", "--config", &cfg, "--chain-id", "5"]);
    assert_eq!(code, 1);
    assert!(err.contains("record 1 of the log of"), "{err}");
    // One of the two, not both, not neither.
    for args in [
        vec!["verify-log", "--config", &cfg, "--log", &log],
        vec!["verify-log", "--require-signed"],
    ] {
        let (code, _, err) = tandem(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("give --log PATH or --config FILE"), "{err}");
    }

    // The same records as JSONL, the second one's (the amend's) quantity changed.
    let records = read_records(Path::new(&log));
    let jsonl = dir.path("records.jsonl");
    let mut text = String::new();
    for (i, r) in records.iter().enumerate() {
        text.push_str(&if i == 1 {
            r.replacen("\"qty\":\"1\"", "\"qty\":\"9\"", 1)
        } else {
            r.clone()
        });
        text.push('\n');
    }
    assert_ne!(text.lines().nth(1), Some(records[1].as_str()));
    std::fs::write(&jsonl, text).unwrap();
    let (code, out, err) = tandem(&["verify-log", "--log", &jsonl]);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("record 2 of"), "{err}");
    assert!(err.contains("x-tandem-signature"), "{err}");
}

/// The records of a file log directory, as text.
fn read_records(dir: &Path) -> Vec<String> {
    tandem_node::auth::audit::file_log_records(dir)
        .unwrap()
        .map(|r| String::from_utf8(r.unwrap().1).unwrap())
        .collect()
}
