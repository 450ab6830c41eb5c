//! Credential plugins of a kubeconfig user (`users[].user.exec`): the
//! commands EKS (`aws eks get-token`), GKE (`gke-gcloud-auth-plugin`) and
//! AKS (`kubelogin`) kubeconfigs name instead of a token. The controller
//! runs the command as `kubectl` does (the `client.authentication.k8s.io`
//! `ExecCredential` protocol, `v1` or `v1beta1`) and sends the bearer
//! token it prints:
//!
//! - the command, its `args` and `env` (added to the controller's own
//!   environment); a command with a `/` in it is relative to the
//!   kubeconfig's directory, one without is looked up on `PATH`;
//! - `KUBERNETES_EXEC_INFO`: an `ExecCredential` whose `spec` says the
//!   run is not interactive (stdin is empty) and, with
//!   `provideClusterInfo: true`, names the cluster's server and CA;
//! - its standard output must be one `ExecCredential` of the same
//!   `apiVersion` with `status.token`; `status.expirationTimestamp`
//!   (RFC 3339), when given, is when the token is asked for again;
//! - a token the API server refuses (401) is thrown away and the plugin
//!   run once more before the request is sent again (`KubeCluster`).
//!
//! Refused, naming the field: `interactiveMode: Always` (the controller
//! has no terminal), and a plugin that prints a client certificate instead
//! of a token. A plugin that fails, hangs past its deadline, or prints
//! something else is an error naming the command, with the end of what it
//! wrote to standard error; the token is never in an error or a log line.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tandem_conn::{civil_from_days, days_from_civil};

/// The protocol versions understood.
pub const API_VERSIONS: [&str; 2] = [
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
];

/// How long a plugin may run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// A token is asked for again this long before it expires.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// Most of a plugin's standard output read.
const MAX_OUTPUT: u64 = 1 << 20;

/// Most of a plugin's standard error quoted in an error.
const STDERR_QUOTED: usize = 600;

/// One user's `exec` entry, checked (`kubeconfig::parse`).
#[derive(Clone, PartialEq, Eq)]
pub struct ExecPlugin {
    pub api_version: String,
    /// As written in the kubeconfig (for errors).
    pub command: String,
    /// What is run: `command`, or the kubeconfig's directory joined with
    /// it when it is a relative path with a `/`.
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub install_hint: Option<String>,
    /// `provideClusterInfo: true`: the server and its CA (base64 PEM, if
    /// the kubeconfig gives one) are passed in `KUBERNETES_EXEC_INFO`.
    pub cluster: Option<(String, Option<String>)>,
    /// `users[NAME].user.exec`, for errors.
    pub field: String,
}

impl std::fmt::Debug for ExecPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The arguments and environment may hold secrets: only the command.
        f.debug_struct("ExecPlugin")
            .field("api_version", &self.api_version)
            .field("command", &self.command)
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

/// A bearer token a plugin printed, and when it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct ExecToken {
    pub token: String,
    pub expires: Option<SystemTime>,
}

impl std::fmt::Debug for ExecToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecToken")
            .field("token", &"…")
            .field("expires", &self.expires)
            .finish()
    }
}

impl ExecToken {
    /// Still usable at `now` (with [`EXPIRY_MARGIN`] to spare).
    pub fn fresh(&self, now: SystemTime) -> bool {
        self.expires.is_none_or(|e| now + EXPIRY_MARGIN < e)
    }
}

/// Why a plugin gave no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("credential plugin {command:?} ({field}): {message}")]
pub struct ExecError {
    pub command: String,
    pub field: String,
    pub message: String,
}

impl ExecPlugin {
    fn err(&self, message: impl Into<String>) -> ExecError {
        ExecError {
            command: self.command.clone(),
            field: self.field.clone(),
            message: message.into(),
        }
    }

    /// What the plugin finds in `KUBERNETES_EXEC_INFO`.
    pub fn exec_info(&self) -> Value {
        let mut spec = json!({ "interactive": false });
        if let Some((server, ca)) = &self.cluster {
            let mut cluster = json!({ "server": server });
            if let Some(ca) = ca {
                cluster["certificate-authority-data"] = json!(ca);
            }
            spec["cluster"] = cluster;
        }
        json!({
            "apiVersion": self.api_version,
            "kind": "ExecCredential",
            "spec": spec,
        })
    }

    /// Runs the plugin (blocking, at most `timeout`) and reads its token.
    pub fn run(&self, timeout: Duration) -> Result<ExecToken, ExecError> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("KUBERNETES_EXEC_INFO", self.exec_info().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            let hint = match (&self.install_hint, e.kind()) {
                (Some(h), std::io::ErrorKind::NotFound) => format!("; {}", h.trim()),
                _ => String::new(),
            };
            self.err(format!("cannot run {}: {e}{hint}", self.program.display()))
        })?;
        let mut out = child.stdout.take().expect("piped");
        let mut errs = child.stderr.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let r = (&mut out).take(MAX_OUTPUT + 1).read_to_end(&mut buf);
            // Whatever is left is drained so the plugin is not blocked.
            let _ = std::io::copy(&mut out, &mut std::io::sink());
            r.map(|_| buf)
        });
        let err_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = (&mut errs).take(64 << 10).read_to_end(&mut buf);
            let _ = std::io::copy(&mut errs, &mut std::io::sink());
            buf
        });
        let t0 = std::time::Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if t0.elapsed() >= timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.err(format!("did not finish within {timeout:?} (killed)")));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(self.err(format!("waiting for it: {e}"))),
            }
        };
        let stdout = reader
            .join()
            .map_err(|_| self.err("reading its output failed"))?
            .map_err(|e| self.err(format!("reading its output: {e}")))?;
        let stderr = err_reader.join().unwrap_or_default();
        if !status.success() {
            let said = quote_stderr(&stderr);
            return Err(self.err(format!("exited with {status}{said}")));
        }
        if stdout.len() as u64 > MAX_OUTPUT {
            return Err(self.err(format!("printed more than {MAX_OUTPUT} bytes")));
        }
        parse_output(&self.api_version, &stdout).map_err(|m| self.err(m))
    }
}

/// A plugin and the last token it gave, shared by one cluster's calls:
/// the plugin runs when there is no token yet, when the token is about to
/// expire, and after the API server refused it.
pub struct ExecSource {
    plugin: ExecPlugin,
    cached: tokio::sync::Mutex<Option<ExecToken>>,
    runs: AtomicU64,
}

impl std::fmt::Debug for ExecSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSource")
            .field("plugin", &self.plugin)
            .field("runs", &self.runs())
            .finish_non_exhaustive()
    }
}

impl ExecSource {
    pub fn new(plugin: ExecPlugin) -> ExecSource {
        ExecSource {
            plugin,
            cached: tokio::sync::Mutex::new(None),
            runs: AtomicU64::new(0),
        }
    }

    pub fn plugin(&self) -> &ExecPlugin {
        &self.plugin
    }

    /// How many times the plugin has been run.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// A token that is not about to expire: the last one, or a new one
    /// from the plugin (run on the blocking pool; calls wait for one run).
    pub async fn token(&self) -> Result<String, ExecError> {
        let mut cached = self.cached.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| t.fresh(SystemTime::now())) {
            return Ok(t.token.clone());
        }
        *cached = None;
        self.runs.fetch_add(1, Ordering::Relaxed);
        let plugin = self.plugin.clone();
        let t = tokio::task::spawn_blocking(move || plugin.run(RUN_TIMEOUT))
            .await
            .map_err(|e| self.plugin.err(format!("the run was lost: {e}")))??;
        let token = t.token.clone();
        *cached = Some(t);
        Ok(token)
    }

    /// Runs the plugin now, on this thread, and keeps its token: a
    /// controller checks its credentials this way before it changes
    /// anything. Not to be called from async code (it blocks).
    pub fn prime(&self) -> Result<(), ExecError> {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let t = self.plugin.run(RUN_TIMEOUT)?;
        if let Ok(mut cached) = self.cached.try_lock() {
            *cached = Some(t);
        }
        Ok(())
    }

    /// Throws `refused` away (the API server answered 401 to it), unless
    /// a newer token has replaced it meanwhile.
    pub async fn forget(&self, refused: &str) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|t| t.token == refused) {
            *cached = None;
        }
    }
}

/// The end of a plugin's standard error, for an error message.
fn quote_stderr(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let start = text
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| text.len() - i <= STDERR_QUOTED)
        .unwrap_or(0);
    let cut = if start > 0 { "…" } else { "" };
    format!(": {cut}{}", &text[start..])
}

/// Reads a plugin's standard output: one `ExecCredential` of
/// `api_version` with `status.token`.
pub fn parse_output(api_version: &str, stdout: &[u8]) -> Result<ExecToken, String> {
    let v: Value = serde_json::from_slice(stdout)
        .map_err(|e| format!("its output is not an ExecCredential (not JSON: {e})"))?;
    let Some(obj) = v.as_object() else {
        return Err("its output is not an ExecCredential (not a JSON object)".into());
    };
    match obj.get("kind").and_then(Value::as_str) {
        Some("ExecCredential") => {}
        other => {
            return Err(format!(
                "its output has kind {other:?}, not \"ExecCredential\""
            ))
        }
    }
    match obj.get("apiVersion").and_then(Value::as_str) {
        Some(a) if a == api_version => {}
        other => {
            return Err(format!(
                "its output has apiVersion {other:?}, not the kubeconfig's {api_version:?}"
            ))
        }
    }
    let Some(status) = obj.get("status").and_then(Value::as_object) else {
        return Err("its output has no status".into());
    };
    let token = match status.get("token") {
        Some(Value::String(t)) if !t.trim().is_empty() => t.trim().to_owned(),
        Some(Value::String(_)) => return Err("its status.token is empty".into()),
        Some(_) => return Err("its status.token is not a string".into()),
        None if status.contains_key("clientCertificateData") => {
            return Err(
                "it gave a client certificate, which the controller does not take from a plugin: use a plugin that gives a token, or the certificate in the kubeconfig"
                    .into(),
            )
        }
        None => return Err("its status has no token".into()),
    };
    if http::HeaderValue::from_str(&format!("Bearer {token}")).is_err() {
        return Err("its status.token is not a valid header value".into());
    }
    let expires = match status.get("expirationTimestamp") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_rfc3339(s).ok_or_else(|| {
            format!("its status.expirationTimestamp {s:?} is not an RFC 3339 time")
        })?),
        Some(_) => return Err("its status.expirationTimestamp is not a string".into()),
    };
    Ok(ExecToken { token, expires })
}

/// `t` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds; a time before 1970
/// is written as 1970-01-01T00:00:00Z): what Kubernetes writes in
/// timestamps and annotations such as `kubectl.kubernetes.io/restartedAt`.
pub fn format_rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` as a time; `None` otherwise.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let digits = &b[start..i.min(start + 9)];
        let mut n = digits
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        for _ in digits.len()..9 {
            n *= 10;
        }
        nanos = n;
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59)
            - offset;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn rfc3339_times_are_written_as_they_are_read() {
        assert_eq!(format_rfc3339(at(0)), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(at(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(at(1_796_565_909)), "2026-12-06T14:05:09Z");
        assert_eq!(format_rfc3339(at(4_107_542_399)), "2100-02-28T23:59:59Z");
        // Every day of 1969-2400 through the parser and back.
        for day in -1..157_000i64 {
            let t = day * 86_400 + (day * 7_919).rem_euclid(86_400);
            let Ok(secs) = u64::try_from(t) else { continue };
            let text = format_rfc3339(at(secs));
            assert_eq!(parse_rfc3339(&text), Some(at(secs)), "{text}");
        }
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(format_rfc3339(before), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn rfc3339_times_are_read_and_others_refused() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(at(0)));
        // `date -u -d 2026-12-06T14:05:09Z +%s`
        assert_eq!(
            parse_rfc3339("2026-12-06T14:05:09Z"),
            Some(at(1_796_565_909))
        );
        assert_eq!(
            parse_rfc3339("2026-12-06T15:05:09+01:00"),
            Some(at(1_796_565_909))
        );
        assert_eq!(
            parse_rfc3339("2026-12-06T13:35:09-00:30"),
            Some(at(1_796_565_909))
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Some(at(1_709_164_800))
        );
        assert_eq!(
            parse_rfc3339("2026-12-06T14:05:09.25Z"),
            Some(at(1_796_565_909) + Duration::from_millis(250))
        );
        assert_eq!(
            parse_rfc3339("2026-12-06T14:05:09.123456789123Z"),
            Some(at(1_796_565_909) + Duration::from_nanos(123_456_789))
        );
        for bad in [
            "",
            "2026-12-06",
            "2026-12-06T14:05:09",
            "2026-12-06T14:05:09+0100",
            "2026-13-06T14:05:09Z",
            "2025-02-29T00:00:00Z",
            "2026-12-06T24:00:00Z",
            "2026-12-06T14:05:09.Z",
            "2026-12-06T14:05:09Zjunk",
            "1969-12-31T23:59:59Z",
            "２026-12-06T14:05:09Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn outputs_are_read_or_refused_saying_why() {
        let v1 = API_VERSIONS[0];
        let ok = parse_output(
            v1,
            br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","spec":{},"status":{"token":"k8s-aws-v1.abc","expirationTimestamp":"2026-12-06T14:05:09Z"}}"#,
        )
        .expect("a token");
        assert_eq!(ok.token, "k8s-aws-v1.abc");
        assert_eq!(ok.expires, Some(at(1_796_565_909)));
        assert!(ok.fresh(at(1_796_565_909 - 11)));
        assert!(!ok.fresh(at(1_796_565_909 - 10)));
        assert!(!format!("{ok:?}").contains("abc"));
        let no_expiry = parse_output(
            v1,
            br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":"t"}}"#,
        )
        .expect("a token");
        assert!(no_expiry.fresh(at(u64::from(u32::MAX))));
        for (out, want) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (br#"{"kind":"Pod","apiVersion":"client.authentication.k8s.io/v1"}"#, "kind Some(\"Pod\")"),
            (
                br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","status":{"token":"t"}}"#,
                "not the kubeconfig's \"client.authentication.k8s.io/v1\"",
            ),
            (br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1"}"#, "no status"),
            (
                br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{}}"#,
                "no token",
            ),
            (
                br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":" "}}"#,
                "status.token is empty",
            ),
            (
                br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":"a\nb"}}"#,
                "not a valid header value",
            ),
            (
                br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"clientCertificateData":"x","clientKeyData":"y"}}"#,
                "client certificate",
            ),
            (
                br#"{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1","status":{"token":"t","expirationTimestamp":"tomorrow"}}"#,
                "not an RFC 3339 time",
            ),
        ] {
            let e = parse_output(v1, out).expect_err(want);
            assert!(e.contains(want), "{e:?} should say {want:?}");
        }
    }

    #[test]
    fn stderr_is_quoted_by_its_end() {
        assert_eq!(quote_stderr(b"  \n"), "");
        assert_eq!(quote_stderr(b"no credentials\n"), ": no credentials");
        let long = "x".repeat(2000) + "the end";
        let q = quote_stderr(long.as_bytes());
        assert!(q.starts_with(": …") && q.ends_with("the end"));
        assert!(q.len() <= STDERR_QUOTED + 8);
    }
}
