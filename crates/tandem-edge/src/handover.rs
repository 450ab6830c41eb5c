//! Replacing the edge process without refusing a connection: the edge's
//! use of the shared hand-over (`tandem_conn::handover`). On SIGUSR2 the
//! running edge starts a new copy of itself that inherits its two
//! listening sockets (`TANDEM_EDGE_LISTEN_FDS=<public>,<admin>`) and the
//! caller's `extra_env` (the live weights); once the new process says it
//! serves (`ready` on its stdout), the old one stops accepting, finishes
//! its in-flight requests and exits. The kernel's accept queue is never
//! closed, so nothing is refused.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::Duration;

use anyhow::{Context, Result};
use tandem_conn::handover::{Announce, Handover};
use tokio::net::TcpListener;

const HANDOVER: Handover = Handover::new("TANDEM_EDGE_LISTEN_FDS");

/// How long the old edge waits for its successor to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// True when this process took its sockets from a predecessor.
pub fn inherited() -> bool {
    HANDOVER.inherited()
}

/// The descriptor of a listener (to hand over).
pub fn raw(l: &TcpListener) -> RawFd {
    tandem_conn::handover::raw(l)
}

/// The public and admin listeners: inherited from a predecessor, or bound.
pub fn listeners(public: SocketAddr, admin: SocketAddr) -> Result<(TcpListener, TcpListener)> {
    let mut ls = HANDOVER
        .listeners(&[public, admin])
        .context("public and admin listeners")?;
    let admin = ls.pop().context("admin listener")?;
    let public = ls.pop().context("public listener")?;
    Ok((public, admin))
}

/// Tells a predecessor waiting on our stdout that we serve now.
pub fn announce_ready() {
    HANDOVER.announce(Announce::Ready);
}

/// Starts the successor with both sockets (and `extra_env` in its
/// environment) and waits (at most 30 s) until it serves. Returns its pid.
pub async fn spawn_successor(
    public: RawFd,
    admin: RawFd,
    extra_env: &[(String, String)],
) -> Result<u32> {
    Ok(HANDOVER
        .spawn_successor(&[public, admin], extra_env, Announce::Ready, READY_TIMEOUT)
        .await?)
}
