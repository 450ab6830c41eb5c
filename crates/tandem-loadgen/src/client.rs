//! The HTTP side: target addresses, a bounded connection pool per target
//! (HTTP/1.1 keep-alive, one request per connection at a time, on the
//! load's own client in `h1.rs`; or HTTP/2 on hyper's, many streams per
//! connection), one attempt with a timeout, and retries on
//! the next target with a short backoff.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::workload::{Method, RequestSpec};
use crate::LoadgenError;

/// Longest backoff between two attempts.
const BACKOFF_CAP: Duration = Duration::from_millis(100);

/// One node address.
#[derive(Clone, Debug)]
pub struct Target {
    /// `http://host:port`, as given without a trailing slash.
    pub base: String,
    /// `host:port`, for the `Host` header.
    pub authority: String,
    /// Resolved address.
    pub addr: SocketAddr,
}

impl Target {
    /// Parses `http://host:port` (or `host:port`) and resolves it.
    pub fn parse(s: &str) -> Result<Self, LoadgenError> {
        let bad = |reason: &str| LoadgenError::Target {
            target: s.to_owned(),
            reason: reason.to_owned(),
        };
        let rest = match s.split_once("://") {
            Some(("http", rest)) => rest,
            Some(_) => return Err(bad("only http:// is supported")),
            None => s,
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("expected http://host:port"));
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| bad(&format!("resolve: {e}")))?
            .next()
            .ok_or_else(|| bad("resolves to no address"))?;
        Ok(Self {
            base: format!("http://{authority}"),
            authority: authority.to_owned(),
            addr,
        })
    }
}

/// A whole answer.
#[derive(Clone, Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `x-tandem-seq` when it names one partition (`P:N@L` or `P:N`).
    pub token: Option<Token>,
    /// `retry-after` in seconds, when given.
    pub retry_after: Option<Duration>,
    /// `x-tandem-cluster`: the cluster that answered, when an edge answered.
    /// A header value shares the answer's buffer, so keeping it costs no
    /// copy; the recorder copies a name once, the first time it sees it.
    pub cluster: Option<http::HeaderValue>,
    /// Body.
    pub body: Bytes,
}

/// Why an attempt got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptError {
    /// Could not connect, or the connection failed before a whole answer.
    Connect,
    /// No whole answer within the attempt timeout.
    Timeout,
}

type H2 = http2::SendRequest<Full<Bytes>>;

#[derive(Debug)]
struct TargetPool {
    target: Target,
    /// HTTP/1.1: one permit per connection.
    h1_slots: Semaphore,
    h1_idle: Mutex<Vec<crate::h1::Conn>>,
    /// HTTP/2: fixed connection slots, redialled when closed.
    h2: Vec<tokio::sync::Mutex<Option<H2>>>,
    h2_next: AtomicUsize,
}

/// Connection pools over all targets.
#[derive(Debug)]
pub struct Pools {
    pools: Vec<TargetPool>,
    http2: bool,
    timeout: Duration,
    retries: u32,
    backoff: Duration,
}

impl Pools {
    /// Pools for `targets`, `connections` split evenly (at least one each).
    pub fn new(
        targets: Vec<Target>,
        connections: usize,
        http2: bool,
        timeout: Duration,
        retries: u32,
        backoff: Duration,
    ) -> Self {
        let n = targets.len();
        let pools = targets
            .into_iter()
            .enumerate()
            .map(|(k, target)| {
                let conns = (connections / n + usize::from(k < connections % n)).max(1);
                TargetPool {
                    target,
                    h1_slots: Semaphore::new(conns),
                    h1_idle: Mutex::new(Vec::with_capacity(conns)),
                    h2: (0..conns).map(|_| tokio::sync::Mutex::new(None)).collect(),
                    h2_next: AtomicUsize::new(0),
                }
            })
            .collect();
        Self {
            pools,
            http2,
            timeout,
            retries,
            backoff,
        }
    }

    /// Number of targets.
    pub fn targets(&self) -> usize {
        self.pools.len()
    }

    /// Sends `spec` to target `first`; on a connection error or a
    /// 429/502/503 answer sends the identical request again to the next
    /// target after a backoff, up to the retry limit. Returns the last
    /// outcome and the number of retries made.
    pub async fn send(
        &self,
        first: usize,
        spec: &RequestSpec,
    ) -> (Result<Answer, AttemptError>, u32) {
        let mut t = first % self.pools.len();
        let mut retries = 0;
        loop {
            let r = self.attempt(t, spec).await;
            let again = match &r {
                Err(AttemptError::Connect) => Some(None),
                Ok(a) if matches!(a.status, 429 | 502 | 503) => Some(a.retry_after),
                _ => None,
            };
            match again {
                Some(after) if retries < self.retries => {
                    let doubling = self.backoff.saturating_mul(1 << retries.min(16));
                    let wait = doubling.max(after.unwrap_or_default()).min(BACKOFF_CAP);
                    tokio::time::sleep(wait).await;
                    retries += 1;
                    t = (t + 1) % self.pools.len();
                }
                _ => return (r, retries),
            }
        }
    }

    /// One attempt on target `t`, bounded by the timeout.
    pub async fn attempt(&self, t: usize, spec: &RequestSpec) -> Result<Answer, AttemptError> {
        let pool = &self.pools[t];
        let fut = async {
            if self.http2 {
                attempt_h2(pool, spec).await
            } else {
                attempt_h1(pool, spec).await
            }
        };
        tokio::time::timeout(self.timeout, fut)
            .await
            .unwrap_or(Err(AttemptError::Timeout))
    }
}

async fn attempt_h1(pool: &TargetPool, spec: &RequestSpec) -> Result<Answer, AttemptError> {
    let _slot = pool
        .h1_slots
        .acquire()
        .await
        .map_err(|_| AttemptError::Connect)?;
    let idle = pool.h1_idle.lock().expect("pool lock").pop();
    let mut conn = match idle {
        // An idle connection the server has closed meanwhile is dropped.
        Some(c) if !c.stale() => c,
        _ => crate::h1::Conn::dial(pool.target.addr).await?,
    };
    // On an error or a timeout the connection is dropped with this future.
    let (answer, keep) = conn.send(spec, &pool.target).await?;
    if keep {
        pool.h1_idle.lock().expect("pool lock").push(conn);
    }
    Ok(answer)
}

async fn attempt_h2(pool: &TargetPool, spec: &RequestSpec) -> Result<Answer, AttemptError> {
    let j = pool.h2_next.fetch_add(1, Ordering::Relaxed) % pool.h2.len();
    let mut sender = {
        let mut slot = pool.h2[j].lock().await;
        match slot.as_ref() {
            Some(s) if !s.is_closed() => s.clone(),
            _ => {
                *slot = None;
                let s = dial_h2(pool.target.addr).await?;
                *slot = Some(s.clone());
                s
            }
        }
    };
    sender.ready().await.map_err(|_| AttemptError::Connect)?;
    let req = build(spec, &pool.target);
    finish(sender.send_request(req).await).await
}

async fn dial_h2(addr: SocketAddr) -> Result<H2, AttemptError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|_| AttemptError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let (s, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .map_err(|_| AttemptError::Connect)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(s)
}

fn build(spec: &RequestSpec, t: &Target) -> http::Request<Full<Bytes>> {
    let method = match spec.method {
        Method::Get => http::Method::GET,
        Method::Post => http::Method::POST,
        Method::Delete => http::Method::DELETE,
    };
    // HTTP/2 needs the absolute form (it becomes :scheme and :authority).
    let uri = format!("{}{}", t.base, spec.path);
    let mut b = http::Request::builder().method(method).uri(uri);
    if !spec.body.is_empty() {
        b = b.header(http::header::CONTENT_TYPE, "application/json");
    }
    if let Some(tok) = &spec.min_seq {
        b = b.header("x-tandem-min-seq", tok.as_str());
    }
    if let Some((sig, expiry)) = &spec.signature {
        b = b.header("x-tandem-signature", sig.as_str());
        b = b.header("x-tandem-expiry", expiry.as_str());
    }
    // Paths are built from checked parts (or validated in the config).
    b.body(Full::new(spec.body.clone()))
        .expect("request parts are valid")
}

async fn finish(
    sent: Result<http::Response<hyper::body::Incoming>, hyper::Error>,
) -> Result<Answer, AttemptError> {
    let resp = sent.map_err(|_| AttemptError::Connect)?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|_| AttemptError::Connect)?
        .to_bytes();
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    Ok(Answer {
        status: parts.status.as_u16(),
        token: header("x-tandem-seq").and_then(parse_token),
        retry_after: header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs),
        cluster: parts.headers.get(crate::samples::CLUSTER_HEADER).cloned(),
        body,
    })
}

/// One partition's consistency token: `P:N@L` as nodes give it (`L`
/// names the log, so that a node of another log refuses it), or the older
/// `P:N`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub partition: u32,
    pub seq: u64,
    /// The log's short id, when the node gave one.
    pub log: Option<String>,
}

impl Token {
    /// The `x-tandem-min-seq` value that asks for this position.
    pub fn header(&self) -> String {
        match &self.log {
            Some(l) => format!("{}:{}@{l}", self.partition, self.seq),
            None => format!("{}:{}", self.partition, self.seq),
        }
    }
}

/// Parses a one-partition consistency token (`P:N@L` or `P:N`).
pub fn parse_token(s: &str) -> Option<Token> {
    let s = s.trim();
    let (pn, log) = match s.split_once('@') {
        Some((pn, l)) if !l.is_empty() => (pn, Some(l.to_owned())),
        Some(_) => return None,
        None => (s, None),
    };
    let (p, n) = pn.split_once(':')?;
    Some(Token {
        partition: p.parse().ok()?,
        seq: n.parse().ok()?,
        log,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_tokens() {
        let t = Target::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(t.base, "http://127.0.0.1:8080");
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.addr.port(), 8080);
        assert!(Target::parse("https://127.0.0.1:1").is_err());
        assert!(Target::parse("http://127.0.0.1:1/x").is_err());
        let t = parse_token("0:17").unwrap();
        assert_eq!((t.partition, t.seq, t.log.as_deref()), (0, 17, None));
        assert_eq!(t.header(), "0:17");
        let t = parse_token("2:65536@00ff00ff00ff00ff").unwrap();
        assert_eq!(
            (t.partition, t.seq, t.log.as_deref()),
            (2, 65536, Some("00ff00ff00ff00ff"))
        );
        assert_eq!(t.header(), "2:65536@00ff00ff00ff00ff");
        assert_eq!(parse_token("x"), None);
        assert_eq!(parse_token("0:1@"), None);
        assert_eq!(parse_token("0:1,1:2"), None);
    }
}
