//! A forked snapshot child that panics must not run anything that takes a
//! lock the parent's other threads may hold. Here the process's panic hook
//! takes a mutex (as a logging hook would) that another thread holds
//! across the fork: a child running that hook would wait forever, and the
//! parent's blocking reap with it. The child must end at once, be counted
//! as failed, and the snapshot be written by the parent. (Its own binary:
//! it sets the process's panic hook.)

#![cfg(target_os = "linux")]

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
use tandem_replica::{Replica, ReplicaConfig};

static HOOK_LOCK: Mutex<()> = Mutex::new(());

#[test]
fn a_panicking_snapshot_child_ends_without_the_parents_locks() {
    let dir = std::env::temp_dir().join(format!("tandem-replica-child-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    // A hook that takes a lock, set before the replica forks (as a node
    // sets its logging hook at start).
    std::panic::set_hook(Box::new(|_| {
        let _g = HOOK_LOCK.lock();
    }));
    let log: Arc<dyn Log> = Arc::new(
        FileLog::open(
            dir.join("log"),
            FileLogConfig {
                fsync: FsyncPolicy::Never,
                ..FileLogConfig::default()
            },
        )
        .expect("open log"),
    );
    for i in 0..50 {
        let cmd = format!(
            r#"{{"op":"place","market":"BTC-USD","id":"o{i}","account":"a","side":"buy","price":"{}","qty":"1"}}"#,
            100 + i
        );
        log.append(&[cmd.as_bytes()]).expect("append");
    }
    let (mut replica, _) =
        Replica::open(Arc::clone(&log), ReplicaConfig::new(dir.join("snap"))).expect("replica");
    replica.catch_up(|_, _, _, _| {}).expect("catch up");

    // Another thread holds the hook's lock across the fork and the reap.
    let guard = HOOK_LOCK.lock().expect("hook lock");
    tandem_replica::inject_snapshot_child_panic(true);
    replica.start_snapshot().expect("start snapshot");
    let child = replica.snapshot_child();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let r = replica.wait_for_snapshot();
        let _ = tx.send(());
        (replica, r)
    });
    let ended = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    if !ended {
        // Unblock the reap so the test reports instead of hanging.
        if let Some(pid) = child {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        }
    }
    tandem_replica::inject_snapshot_child_panic(false);
    drop(guard);
    let (replica, r) = waiter.join().expect("waiter");
    assert!(ended, "the snapshot child hung in the panic hook");
    let seq = r.expect("the parent writes the snapshot itself");
    assert_eq!(seq, replica.applied_seq());
    let (failures, why) = replica.snapshot_failures();
    assert_eq!(failures, 1);
    assert!(why.is_some_and(|w| w.contains("panicked")), "{why:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
