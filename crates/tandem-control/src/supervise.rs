//! One supervisor of a child process, for tests, benches and the
//! controller's local-process actuator: start it (its output appended to
//! a log file, or as the caller set it), wait until it is ready (a
//! predicate or an HTTP 200 on a path, with a deadline, failing at once if
//! the process exits meanwhile, with the tail of its log), send it a
//! signal, stop it (SIGTERM, then wait with a bound) or kill it (SIGKILL).
//! It is killed and reaped on drop, so a failing test leaves no process
//! behind.
//!
//! Signals go to the child's pid only while it has not been reaped, so the
//! pid cannot have been reused by another process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Signal numbers for `Supervised::signal`, so callers need no `libc`.
pub mod signal {
    pub const HUP: i32 = libc::SIGHUP;
    pub const TERM: i32 = libc::SIGTERM;
    pub const KILL: i32 = libc::SIGKILL;
    pub const USR2: i32 = libc::SIGUSR2;
}

/// How often waits look again (child exit, readiness).
const POLL: Duration = Duration::from_millis(10);
/// Bytes of the log shown in an error.
const TAIL: usize = 4000;

/// Why a supervised process could not be started, made ready or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("{name}: could not start: {cause}")]
    Spawn { name: String, cause: String },
    #[error("{name}: exited with {status} before it was ready; its log ends:\n{log}")]
    Exited {
        name: String,
        status: ExitStatus,
        log: String,
    },
    #[error("{name}: not ready within {} ms; its log ends:\n{log}", within.as_millis())]
    NotReady {
        name: String,
        within: Duration,
        log: String,
    },
    #[error("{name}: still running {} ms after SIGTERM; killed", within.as_millis())]
    StopTimeout { name: String, within: Duration },
    #[error("{name}: not running (exited with {status})")]
    NotRunning { name: String, status: ExitStatus },
    #[error("{name}: signal {signal}: {cause}")]
    Signal {
        name: String,
        signal: i32,
        cause: String,
    },
}

/// A child process, killed on drop (unless detached).
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
    /// Set once the child has been reaped: no signal may go to its pid.
    status: Option<ExitStatus>,
    log: Option<PathBuf>,
    started: Instant,
    /// Left running when this handle drops (`detach`).
    detached: bool,
}

impl Supervised {
    /// Starts `cmd` as is (stdio as the caller set it; stdin closed unless
    /// set).
    pub fn start(name: &str, mut cmd: Command) -> Result<Supervised, SuperviseError> {
        cmd.stdin(Stdio::null());
        Self::spawn(name, cmd, None)
    }

    /// Starts `cmd` with stdout and stderr appended to `log` (created if
    /// missing), whose tail is shown when it fails.
    pub fn start_logged(
        name: &str,
        mut cmd: Command,
        log: &Path,
    ) -> Result<Supervised, SuperviseError> {
        let spawn_err = |cause: String| SuperviseError::Spawn {
            name: name.to_owned(),
            cause,
        };
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| spawn_err(format!("open log {}: {e}", log.display())))?;
        let f2 = f
            .try_clone()
            .map_err(|e| spawn_err(format!("log {}: {e}", log.display())))?;
        cmd.stdin(Stdio::null()).stdout(f).stderr(f2);
        Self::spawn(name, cmd, Some(log.to_path_buf()))
    }

    fn spawn(
        name: &str,
        mut cmd: Command,
        log: Option<PathBuf>,
    ) -> Result<Supervised, SuperviseError> {
        let child = cmd.spawn().map_err(|e| SuperviseError::Spawn {
            name: name.to_owned(),
            cause: format!("{:?}: {e}", cmd.get_program()),
        })?;
        Ok(Supervised {
            name: name.to_owned(),
            child,
            status: None,
            log,
            started: Instant::now(),
            detached: false,
        })
    }

    /// Lets the process outlive this handle (a cluster the controller
    /// started carries traffic after the controller exits). Returns its pid.
    pub fn detach(mut self) -> u32 {
        self.detached = true;
        self.pid()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time since the process was started.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// The last `bytes` of its log file (empty without one).
    pub fn log_tail(&self, bytes: usize) -> String {
        let Some(path) = &self.log else {
            return String::new();
        };
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(path) {
            let mut b = Vec::new();
            let _ = f.read_to_end(&mut b);
            let from = b.len().saturating_sub(bytes);
            s = String::from_utf8_lossy(&b[from..]).into_owned();
        }
        s
    }

    /// Its exit status if it has exited (reaping it), without waiting.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(s)) = self.child.try_wait() {
                self.status = Some(s);
            }
        }
        self.status
    }

    /// Polls `ready` until it is true; fails if the process exits first
    /// or at `within`. Returns the time from start to ready.
    pub fn wait_ready(
        &mut self,
        within: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<Duration, SuperviseError> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(SuperviseError::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log_tail(TAIL),
                });
            }
            if ready() {
                return Ok(self.started.elapsed());
            }
            if Instant::now() >= deadline {
                return Err(SuperviseError::NotReady {
                    name: self.name.clone(),
                    within,
                    log: self.log_tail(TAIL),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// `wait_ready` on `GET http://addr{path}` answering 200.
    pub fn wait_http_ready(
        &mut self,
        addr: SocketAddr,
        path: &str,
        within: Duration,
    ) -> Result<Duration, SuperviseError> {
        self.wait_ready(within, || http_status(addr, path) == Some(200))
    }

    /// `wait_ready` for async callers: `ready` is awaited each turn and
    /// the waits between are tokio sleeps.
    pub async fn wait_ready_async<F, Fut>(
        &mut self,
        within: Duration,
        mut ready: F,
    ) -> Result<Duration, SuperviseError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(SuperviseError::Exited {
                    name: self.name.clone(),
                    status,
                    log: self.log_tail(TAIL),
                });
            }
            if ready().await {
                return Ok(self.started.elapsed());
            }
            if Instant::now() >= deadline {
                return Err(SuperviseError::NotReady {
                    name: self.name.clone(),
                    within,
                    log: self.log_tail(TAIL),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`, `libc::SIGUSR2`).
    pub fn signal(&mut self, signal: i32) -> Result<(), SuperviseError> {
        if let Some(status) = self.try_exit() {
            return Err(SuperviseError::NotRunning {
                name: self.name.clone(),
                status,
            });
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|e| SuperviseError::Signal {
            name: self.name.clone(),
            signal,
            cause: e.to_string(),
        })?;
        // SAFETY: kill(2) only sends a signal; the pid is our own child's,
        // not reaped yet (checked just above), so it names no other process.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 {
            return Err(SuperviseError::Signal {
                name: self.name.clone(),
                signal,
                cause: std::io::Error::last_os_error().to_string(),
            });
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `within` for the exit. Past it the
    /// process is killed and `StopTimeout` returned. An exited process
    /// gives its status.
    pub fn stop(&mut self, within: Duration) -> Result<ExitStatus, SuperviseError> {
        if let Some(s) = self.try_exit() {
            return Ok(s);
        }
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.try_exit() {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(SuperviseError::StopTimeout {
                    name: self.name.clone(),
                    within,
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILL (no drain, no final snapshot) and reap. Returns the exit
    /// status (`None` only if it could not be reaped).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            let _ = self.child.kill();
            if let Ok(s) = self.child.wait() {
                self.status = Some(s);
            }
        }
        self.status
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if !self.detached {
            self.kill();
        }
    }
}

/// The status of `GET http://addr{path}` on a fresh connection, `None` if
/// there is no answer within a second.
pub fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let t = Duration::from_secs(1);
    let mut s = TcpStream::connect_timeout(&addr, t).ok()?;
    s.set_read_timeout(Some(t)).ok()?;
    s.set_write_timeout(Some(t)).ok()?;
    // One write: a server that answers after its first read sees the
    // whole request.
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let line = std::str::from_utf8(&head[..n]).ok()?;
    line.strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?
        .get(..3)?
        .parse()
        .ok()
}

/// The workspace binary `name` built beside the running test executable
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`), or the path
/// in the environment variable `env` when set. Panics with how to build it
/// when it is missing: for tests that run the real binaries.
pub fn target_binary(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return p.into();
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable in target/<profile>/deps")
        .join(name);
    assert!(
        bin.is_file(),
        "{} is missing: this test runs it; build it first (`cargo build -p tandem-cli`, \
         same profile as the tests), or set {env}",
        bin.display()
    );
    bin
}
