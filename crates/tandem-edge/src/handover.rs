//! Replacing the edge process without refusing a connection. On SIGUSR2
//! the running edge clears close-on-exec on its two listening sockets and
//! starts a new copy of itself (same binary path, same arguments) that
//! inherits them, named in `TANDEM_EDGE_LISTEN_FDS=<public>,<admin>`. The
//! new process serves the very same sockets, so the kernel's accept queue
//! is never closed: a connection arriving during the hand-over is accepted
//! by one process or the other, never refused. Once the new process says
//! it is serving (a `ready` line on its stdout), the old one stops
//! accepting, finishes its in-flight requests and exits.
//!
//! The two `unsafe` calls (fcntl, from_raw_fd) are confined here; each is
//! on a descriptor this process owns and checks.

#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::TcpListener;

const ENV: &str = "TANDEM_EDGE_LISTEN_FDS";

/// True when this process took its sockets from a predecessor.
pub fn inherited() -> bool {
    std::env::var_os(ENV).is_some()
}

/// The descriptor of a listener (to hand over).
pub fn raw(l: &TcpListener) -> RawFd {
    l.as_raw_fd()
}

fn adopt(fd: RawFd) -> Result<TcpListener> {
    if fd < 3 {
        bail!("{ENV}: descriptor {fd} is not a listener");
    }
    // SAFETY: the descriptor was handed to this process by its predecessor
    // for exactly this purpose, nothing else in this process uses it, and
    // ownership passes to the listener here exactly once.
    let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    std.local_addr()
        .with_context(|| format!("{ENV}: descriptor {fd} is not a TCP listener"))?;
    std.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std)?)
}

fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let std = std::net::TcpListener::bind(addr).with_context(|| format!("listen on {addr}"))?;
    std.set_nonblocking(true)?;
    Ok(TcpListener::from_std(std)?)
}

/// The public and admin listeners: inherited from a predecessor, or bound.
pub fn listeners(public: SocketAddr, admin: SocketAddr) -> Result<(TcpListener, TcpListener)> {
    match std::env::var(ENV) {
        Ok(v) => {
            let (p, a) = v
                .split_once(',')
                .with_context(|| format!("{ENV}={v:?}: expected <fd>,<fd>"))?;
            let p: RawFd = p.parse().with_context(|| format!("{ENV}={v:?}"))?;
            let a: RawFd = a.parse().with_context(|| format!("{ENV}={v:?}"))?;
            Ok((adopt(p)?, adopt(a)?))
        }
        Err(_) => Ok((bind(public)?, bind(admin)?)),
    }
}

/// Tells a predecessor waiting on our stdout that we serve now.
pub fn announce_ready() {
    if inherited() {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    }
}

fn keep_across_exec(fd: RawFd) -> Result<()> {
    // SAFETY: fcntl on a descriptor this process owns (a listener it is
    // serving); F_SETFD with 0 only clears close-on-exec.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    if rc != 0 {
        bail!(
            "clear close-on-exec on {fd}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Starts the successor with both sockets (and `extra_env` in its
/// environment) and waits (at most 30 s) until it serves. Returns its pid.
pub async fn spawn_successor(
    public: RawFd,
    admin: RawFd,
    extra_env: &[(String, String)],
) -> Result<u32> {
    keep_across_exec(public)?;
    keep_across_exec(admin)?;
    let exe = std::env::current_exe().context("find own binary")?;
    let mut child = std::process::Command::new(&exe)
        .args(std::env::args_os().skip(1))
        .env(ENV, format!("{public},{admin}"))
        .envs(extra_env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("start {}", exe.display()))?;
    let pid = child.id();
    let stdout = child.stdout.take().context("successor stdout")?;
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    match tokio::time::timeout(Duration::from_secs(30), ready).await {
        Ok(Ok(Ok(line))) if line.trim() == "ready" => Ok(pid),
        other => {
            let _ = child.kill();
            bail!("successor {pid} did not become ready: {other:?}")
        }
    }
}
