//! Replacing a server process without refusing a connection (SIGUSR2 in
//! the node and the edge). The running process clears close-on-exec on its
//! listening sockets and starts a new copy of itself (same binary path,
//! arguments and environment, plus the caller's `extra_env`) that inherits
//! them, named in an environment variable (`<VAR>=<fd>,<fd>,...`, one per
//! listener, in order). The new process serves the very same sockets, so
//! the kernel's accept queue is never closed: a connection arriving during
//! the hand-over is accepted by one process or the other, or waits in the
//! queue, and is never refused.
//!
//! The successor reports on its stdout: `sockets` once it holds the
//! listeners, `ready` once it serves them ([`Handover::announce`]). The
//! predecessor waits for one of the two ([`Handover::spawn_successor`]),
//! then stops accepting and drains. A server that can start fully beside
//! its predecessor (the edge, a node on Kafka) waits for `ready`; one that
//! must wait for a resource its predecessor holds (a node's file-log lock)
//! waits for `sockets`, and new connections wait in the queue until the
//! successor serves.
//!
//! The `unsafe` calls (fcntl, from_raw_fd, dup2) are confined here; each
//! is on a descriptor this process owns and checks.

#![allow(unsafe_code)]

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::time::Duration;

use tokio::net::TcpListener;

/// What went wrong taking or handing over the sockets.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("{var}={value:?}: {why}")]
    BadVar {
        var: &'static str,
        value: String,
        why: String,
    },
    #[error("{var}: descriptor {fd} is not a TCP listener: {source}")]
    NotListener {
        var: &'static str,
        fd: RawFd,
        source: std::io::Error,
    },
    // The source is the error's cause, printed by `{:#}` after this.
    #[error("listen on {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("set close-on-exec on descriptor {fd}: {source}")]
    CloseOnExec { fd: RawFd, source: std::io::Error },
    #[error("start successor {exe}: {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error("successor {pid} did not say `{wanted}` within {secs} s (got {got:?})")]
    NotReady {
        pid: u32,
        wanted: &'static str,
        secs: u64,
        got: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a successor tells its predecessor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// It holds the listening sockets (the predecessor may stop accepting).
    Sockets,
    /// It serves them.
    Ready,
}

impl Announce {
    fn word(self) -> &'static str {
        match self {
            Announce::Sockets => "sockets",
            Announce::Ready => "ready",
        }
    }
}

/// The hand-over of one server kind, named by its environment variable
/// (`TANDEM_EDGE_LISTEN_FDS`, `TANDEM_NODE_LISTEN_FDS`).
#[derive(Debug, Clone, Copy)]
pub struct Handover {
    var: &'static str,
}

/// The descriptor of a listener (to hand over).
pub fn raw(l: &TcpListener) -> RawFd {
    l.as_raw_fd()
}

fn set_cloexec(fd: RawFd, on: bool) -> Result<(), HandoverError> {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: fcntl on a descriptor this process owns (a listener it
    // serves or was handed); F_SETFD only sets or clears close-on-exec.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFD, flag) };
    if rc != 0 {
        return Err(HandoverError::CloseOnExec {
            fd,
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn bind(addr: SocketAddr) -> Result<TcpListener, HandoverError> {
    let bound = || -> std::io::Result<TcpListener> {
        let std = std::net::TcpListener::bind(addr)?;
        std.set_nonblocking(true)?;
        TcpListener::from_std(std)
    };
    bound().map_err(|source| HandoverError::Bind { addr, source })
}

impl Handover {
    pub const fn new(var: &'static str) -> Handover {
        Handover { var }
    }

    /// True when this process took its sockets from a predecessor.
    pub fn inherited(&self) -> bool {
        std::env::var_os(self.var).is_some()
    }

    fn adopt(&self, fd: RawFd) -> Result<TcpListener, HandoverError> {
        let not = |source| HandoverError::NotListener {
            var: self.var,
            fd,
            source,
        };
        if fd < 3 {
            return Err(not(std::io::Error::other("a standard stream")));
        }
        // SAFETY: the descriptor was handed to this process by its
        // predecessor for exactly this purpose, nothing else in this
        // process uses it, and ownership passes to the listener here once.
        let std = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        std.local_addr().map_err(not)?;
        set_cloexec(fd, true)?;
        std.set_nonblocking(true)?;
        Ok(TcpListener::from_std(std)?)
    }

    /// The listeners: inherited from a predecessor (as many as `addrs`, in
    /// the same order), or bound to `addrs`.
    pub fn listeners(&self, addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, HandoverError> {
        let Ok(value) = std::env::var(self.var) else {
            return addrs.iter().map(|&a| bind(a)).collect();
        };
        let bad = |why: String| HandoverError::BadVar {
            var: self.var,
            value: value.clone(),
            why,
        };
        let fds = value
            .split(',')
            .map(|f| f.trim().parse::<RawFd>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("expected <fd>,<fd>,...: {e}")))?;
        if fds.len() != addrs.len() {
            return Err(bad(format!(
                "{} descriptors for {} listeners",
                fds.len(),
                addrs.len()
            )));
        }
        fds.into_iter().map(|fd| self.adopt(fd)).collect()
    }

    /// Tells a predecessor waiting on our stdout how far we are (nothing
    /// if this process was not handed sockets). After `Ready` stdout goes
    /// to /dev/null: the predecessor stops reading it and exits.
    pub fn announce(&self, what: Announce) {
        if !self.inherited() {
            return;
        }
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{}", what.word());
        let _ = out.flush();
        if what == Announce::Ready {
            if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
                // SAFETY: dup2 of a descriptor we just opened onto stdout,
                // which this process owns; `null` is closed after.
                unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) };
            }
        }
    }

    /// Starts the successor with the listeners `fds` and `extra_env`, and
    /// waits (at most `timeout`) until it announces `wait` (or `ready`,
    /// which implies `sockets`). Returns its pid. On failure the successor
    /// is killed and the sockets are still this process's alone.
    pub async fn spawn_successor(
        &self,
        fds: &[RawFd],
        extra_env: &[(String, String)],
        wait: Announce,
        timeout: Duration,
    ) -> Result<u32, HandoverError> {
        for &fd in fds {
            set_cloexec(fd, false)?;
        }
        let spawned = self.spawn(fds, extra_env, wait, timeout).await;
        // Whatever happened, later children (and a successor's own
        // successor) must not inherit the sockets by accident.
        for &fd in fds {
            let _ = set_cloexec(fd, true);
        }
        spawned
    }

    async fn spawn(
        &self,
        fds: &[RawFd],
        extra_env: &[(String, String)],
        wait: Announce,
        timeout: Duration,
    ) -> Result<u32, HandoverError> {
        let exe = std::env::current_exe()?;
        let list = fds
            .iter()
            .map(RawFd::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut child = std::process::Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .envs(extra_env.iter().map(|(k, v)| (k, v)))
            .env(self.var, list)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| HandoverError::Spawn {
                exe: exe.display().to_string(),
                source,
            })?;
        let pid = child.id();
        let stdout = child.stdout.take().ok_or_else(|| {
            HandoverError::Io(std::io::Error::other("successor stdout not piped"))
        })?;
        let heard = tokio::task::spawn_blocking(move || {
            let mut seen = String::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let line = line.trim().to_owned();
                if line == "ready" || line == wait.word() {
                    return (true, line);
                }
                seen = line;
            }
            (false, seen)
        });
        let got = match tokio::time::timeout(timeout, heard).await {
            Ok(Ok((true, _))) => return Ok(pid),
            Ok(Ok((false, last))) => format!("stdout closed; last line {last:?}"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "nothing in time".into(),
        };
        let _ = child.kill();
        let _ = child.wait();
        Err(HandoverError::NotReady {
            pid,
            wanted: wait.word(),
            secs: timeout.as_secs(),
            got,
        })
    }
}
