//! The process supervisor on small `sh` children: ready by a predicate
//! and by an HTTP 200, an exit before ready is reported at once with the
//! log's tail, a deadline passes as `NotReady`, SIGTERM stops a process
//! and one that ignores it is killed at the bound, a signal reaches the
//! child, and a dropped supervisor leaves no process behind.

use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tandem_control::supervise::{signal, SuperviseError, Supervised};
use tandem_log::conformance::TempDir;

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; a reaped process has none.
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn ready_by_predicate_then_stopped_by_sigterm() {
    let dir = TempDir::new("sup-ready");
    let flag = dir.path().join("ready");
    let mut p = Supervised::start_logged(
        "child",
        sh(&format!(
            "sleep 0.1; touch {}; exec sleep 30",
            flag.display()
        )),
        &dir.path().join("log"),
    )
    .unwrap();
    let took = p
        .wait_ready(Duration::from_secs(10), || flag.exists())
        .unwrap();
    assert!(took >= Duration::from_millis(100), "{took:?}");
    let status = p.stop(Duration::from_secs(5)).unwrap();
    assert_eq!(status.signal(), Some(signal::TERM));
    assert!(!alive(p.pid()));
}

#[test]
fn an_exit_before_ready_is_reported_with_the_log() {
    let dir = TempDir::new("sup-exit");
    let mut p = Supervised::start_logged(
        "broken",
        sh("echo 'listen on 127.0.0.1:1: address in use' >&2; exit 3"),
        &dir.path().join("log"),
    )
    .unwrap();
    let t = Instant::now();
    match p.wait_ready(Duration::from_secs(30), || false) {
        Err(SuperviseError::Exited { status, log, name }) => {
            assert_eq!((status.code(), name.as_str()), (Some(3), "broken"));
            assert!(log.contains("address in use"), "{log}");
        }
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    // A signal to an exited process is refused, not sent.
    assert!(matches!(
        p.signal(signal::HUP),
        Err(SuperviseError::NotRunning { .. })
    ));
}

#[test]
fn a_deadline_passes_as_not_ready() {
    let mut p = Supervised::start("slow", sh("exec sleep 30")).unwrap();
    let t = Instant::now();
    let e = p
        .wait_ready(Duration::from_millis(200), || false)
        .unwrap_err();
    assert!(matches!(e, SuperviseError::NotReady { .. }), "{e}");
    assert!(t.elapsed() >= Duration::from_millis(200));
    let pid = p.pid();
    drop(p);
    assert!(!alive(pid), "killed and reaped on drop");
}

#[test]
fn ready_by_http_200() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    // Answers 503 twice, then 200.
    let server = std::thread::spawn(move || {
        for i in 0.. {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let status = if i < 2 {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(s, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            if i >= 2 {
                return;
            }
        }
    });
    let mut p = Supervised::start("web", sh("exec sleep 30")).unwrap();
    p.wait_http_ready(addr, "/readyz", Duration::from_secs(10))
        .unwrap();
    server.join().unwrap();
}

#[test]
fn sigterm_ignored_is_killed_at_the_bound_and_signals_arrive() {
    let dir = TempDir::new("sup-stubborn");
    let got = dir.path().join("got-hup");
    let mut p = Supervised::start(
        "stubborn",
        sh(&format!(
            "trap '' TERM; trap 'touch {}' HUP; touch {}/up; while true; do sleep 0.05; done",
            got.display(),
            dir.path().display()
        )),
    )
    .unwrap();
    let up = dir.path().join("up");
    p.wait_ready(Duration::from_secs(10), || up.exists())
        .unwrap();
    p.signal(signal::HUP).unwrap();
    p.wait_ready(Duration::from_secs(10), || got.exists())
        .unwrap();
    let t = Instant::now();
    match p.stop(Duration::from_millis(300)) {
        Err(SuperviseError::StopTimeout { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(!alive(p.pid()));
    assert_eq!(p.kill().and_then(|s| s.signal()), Some(signal::KILL));
}

#[tokio::test]
async fn async_readiness() {
    let mut p = Supervised::start("async", sh("exec sleep 30")).unwrap();
    let mut n = 0;
    p.wait_ready_async(Duration::from_secs(10), || {
        n += 1;
        let done = n >= 3;
        async move { done }
    })
    .await
    .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn a_detached_process_outlives_its_handle() {
    let p = Supervised::start("detached", sh("exec sleep 30")).unwrap();
    let pid = p.detach();
    assert!(alive(pid), "dropping a detached handle must not kill it");
    // Clean up by hand, as an operator would.
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
}
