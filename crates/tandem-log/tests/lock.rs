//! One writer per log directory, and a log's identity. Two nodes pointed
//! at one data directory both wrote seq 1 into the same segment; after a
//! kill -9 the first one's acknowledged record was gone. The directory is
//! now locked while a log is open: a second opener (another process, or
//! another handle in this one) is refused with an error naming the
//! directory, and the lock dies with its holder.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use tandem_log::{FileLog, FileLogConfig, Log, LogError};

fn open(dir: &TempDir) -> Result<FileLog, LogError> {
    FileLog::open(dir.path(), FileLogConfig::default())
}

#[test]
fn a_second_open_of_one_directory_is_refused_and_names_it() {
    let dir = TempDir::new("lock-twice");
    let first = open(&dir).expect("first open");
    first.append(&[b"a"]).expect("append");
    let err = open(&dir).expect_err("a second writer must be refused");
    assert!(matches!(err, LogError::Locked { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().display().to_string()) && text.contains("another process"),
        "{text}"
    );
    // Nothing the refused opener did touched the log.
    assert_eq!(first.last_seq(), 1);
    drop(first);
    let again = open(&dir).expect("open after the holder closed");
    assert_eq!(again.last_seq(), 1);
}

#[test]
fn a_process_holding_the_log_keeps_others_out_until_it_dies() {
    let dir = TempDir::new("lock-process");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem-log-writer"))
        .arg(dir.path())
        .arg("0")
        .arg("1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer");
    // The writer prints a line per acknowledged append: once one is out,
    // it holds the log.
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("an ack").expect("line");
    assert!(!first.is_empty());
    let err = open(&dir).expect_err("the writer holds the directory");
    assert!(matches!(err, LogError::Locked { .. }), "{err:?}");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    // The kernel drops the dead writer's lock; recovery proceeds.
    let log = open(&dir).expect("open after the writer died");
    assert!(log.last_seq() >= 1);
}

#[test]
fn lock_wait_takes_over_when_the_holder_lets_go() {
    let dir = TempDir::new("lock-wait");
    let holder = open(&dir).expect("holder");
    holder.append(&[b"x", b"y"]).expect("append");
    let released = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        drop(holder);
    });
    let cfg = FileLogConfig {
        lock_wait: Duration::from_secs(20),
        ..FileLogConfig::default()
    };
    let started = Instant::now();
    let log = FileLog::open(dir.path(), cfg).expect("open once the holder let go");
    released.join().expect("holder thread");
    assert_eq!(log.last_seq(), 2);
    assert!(started.elapsed() < Duration::from_secs(20));

    // And a bounded wait still fails while the lock is held.
    let cfg = FileLogConfig {
        lock_wait: Duration::from_millis(100),
        ..FileLogConfig::default()
    };
    let err = FileLog::open(dir.path(), cfg).expect_err("still held");
    assert!(matches!(err, LogError::Locked { .. }), "{err:?}");
}

#[test]
fn identity_is_made_with_the_log_and_kept_across_opens() {
    let (a, b) = (TempDir::new("id-a"), TempDir::new("id-b"));
    let id_a = open(&a).expect("open a").identity();
    let id_b = open(&b).expect("open b").identity();
    assert!(id_a.starts_with("file:") && id_a.len() == 5 + 32, "{id_a}");
    assert_ne!(id_a, id_b, "two logs, two identities");
    assert_eq!(open(&a).expect("reopen a").identity(), id_a);
    // A damaged identity file is refused, not replaced by a new identity.
    std::fs::write(a.path().join("log.id"), "not hex\n").expect("write");
    let err = open(&a).expect_err("damaged identity");
    assert!(matches!(err, LogError::Corrupt { .. }), "{err:?}");
}
