//! The Kubernetes and Cloudflare actuators sending their requests over
//! real TLS on loopback. No API server of either runs on the build
//! machines: a small HTTPS server in the test (tokio + rustls, a
//! certificate from a CA made at run time) answers as the Kubernetes API
//! (apps/v1 StatefulSet and its `scale` subresource, core/v1 Node and Pod,
//! policy/v1 Eviction, `Status` errors) and Cloudflare's v4 API (Workers
//! KV write, its `success`/`errors` envelope) answer in their API
//! references, and refuses any request whose method, path, headers or
//! body are not what those references ask for. Every request it got is
//! kept and checked again by the test.
//!
//! - Kubernetes: a cold start scales the StatefulSet (merge patch of
//!   `scale`) and polls until `readyReplicas` rises to the size; a
//!   StatefulSet never ready times out naming the cluster; a server whose
//!   certificate is of another CA is refused before any request; 401
//!   names the cluster and the context; 409 on the scale is tried again;
//!   restart and drain (429 from a PodDisruptionBudget, 404 for a pod
//!   gone); a client certificate from the kubeconfig (mutual TLS); a
//!   credential plugin (`exec`, a shell script here) giving the token,
//!   run again after a 401 and when its token expires, and named when it
//!   fails, is missing, hangs or prints something else; bad kubeconfigs
//!   refused naming file and field.
//! - Cloudflare: the KV write carries the routes document of the weights;
//!   429 is kept and written on the next flush; 401 is reported and
//!   dropped; the token is in no error and no debug output.
//! - The run loop in-process with a `start: cold` cluster started by the
//!   Kubernetes starter against the fake API server: the test starts the
//!   cluster's real node when the fake server is asked to scale, and the
//!   fake reports `readyReplicas` from that node's `/readyz`; the
//!   controller verifies it, gives it weight, and the Cloudflare layer's
//!   KV writes carry the weights every edge got. A cold cluster whose
//!   StatefulSet never gets ready pauses the run, naming the cluster, and
//!   never gets weight.

mod place_order;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};
use tandem_conn::test_pki::{Ca, Leaf};
use tandem_log::conformance::TempDir;
use tandem_rollout::cloudflare::{CloudflareError, KvTarget};
use tandem_rollout::https::{HttpsError, Roots};
use tandem_rollout::kube_actuator::{Failure, KubeCluster, KubeStarter, KubeTarget};
use tandem_rollout::layers::{CloudflareLayer, CloudflareTarget};
use tandem_rollout::plan::Plan;
use tandem_rollout::run::{ClusterStarter, StartReport};
use tokio::net::TcpListener;

const KUBE_TOKEN: &str = "kube-test-token-5c1e";
const CF_TOKEN: &str = "cf-test-token-9a7b";
const ACCOUNT: &str = "0123456789abcdef0123456789abcdef";
const NAMESPACE: &str = "fedcba9876543210fedcba9876543210";
const STS_PATH: &str = "/apis/apps/v1/namespaces/tandem/statefulsets/tandem-node";
/// The run-loop tests judge latency on two cores: one at a time.
static ONE_RUN_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One request as the fake server got it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    path: String,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

type Handler = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// An HTTPS server on loopback answering with `handler`.
struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    failed_handshakes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[allow(deprecated)]
fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Fake {
    /// Serves with a certificate issued by `ca`; with `client_ca`, every
    /// client must present a certificate of that CA.
    async fn start(ca: &Ca, client_ca: Option<&Ca>, handler: Handler) -> Fake {
        let leaf = ca.issue(&Leaf::new("fake-api", 7));
        let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(ring())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(cca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_slice_iter(cca.pem.as_bytes()) {
                    roots.add(c.unwrap()).unwrap();
                }
                let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    ring(),
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(v)
            }
        };
        let cfg = builder.with_single_cert(chain, key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let failed_handshakes = Arc::new(AtomicU64::new(0));
        let (s, f) = (Arc::clone(&seen), Arc::clone(&failed_handshakes));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, seen, failed, handler) = (
                    acceptor.clone(),
                    Arc::clone(&s),
                    Arc::clone(&f),
                    Arc::clone(&handler),
                );
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (seen, handler) = (Arc::clone(&seen), Arc::clone(&handler));
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let s = Seen {
                                    method: parts.method.to_string(),
                                    path: parts
                                        .uri
                                        .path_and_query()
                                        .map_or("/".into(), |p| p.to_string()),
                                    headers: parts.headers,
                                    body: body.to_vec(),
                                };
                                let (code, text) = handler(&s);
                                seen.lock().unwrap().push(s);
                                Ok::<_, Infallible>(
                                    http::Response::builder()
                                        .status(code)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(text)))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Fake {
            addr,
            seen,
            failed_handshakes,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A Kubernetes `Status` error body (apimachinery's metav1.Status).
fn status(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
    .to_string()
}

/// A StatefulSet as `GET` returns it; `readyReplicas` left out at 0, as
/// the API server does.
fn statefulset(replicas: u32, ready: u32) -> String {
    let mut st = json!({"observedGeneration": 2, "replicas": replicas,
        "currentReplicas": replicas, "updatedReplicas": replicas,
        "currentRevision": "tandem-node-6b9f7c", "updateRevision": "tandem-node-6b9f7c",
        "collisionCount": 0, "availableReplicas": ready});
    if ready > 0 {
        st["readyReplicas"] = json!(ready);
    }
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "tandem-node", "namespace": "tandem", "generation": 2,
                        "resourceVersion": "48213", "uid": "2d0c1c8e-5b6a-4f37-9d0b-0c1e2f3a4b5c"},
           "spec": {"replicas": replicas, "serviceName": "tandem-node",
                    "selector": {"matchLabels": {"app.kubernetes.io/name": "tandem-node"}}},
           "status": st})
    .to_string()
}

/// The API server's 404 with its `Status` body.
fn not_found(message: &str) -> (u16, String) {
    (404, status(404, "NotFound", message))
}

/// The autoscaling/v1 Scale a `scale` patch returns.
fn scale_answer(replicas: u32) -> String {
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": "tandem-node", "namespace": "tandem", "resourceVersion": "48214"},
           "spec": {"replicas": replicas},
           "status": {"replicas": 0, "selector": "app.kubernetes.io/name=tandem-node"}})
    .to_string()
}

/// What every request to the Kubernetes API must carry; `Some` is the
/// refusal the fake answers (as the API server would: 401 without the
/// token, 415 for a patch type it does not take).
fn kube_refusal(s: &Seen, token: Option<&str>) -> Option<(u16, String)> {
    if let Some(t) = token {
        if s.header("authorization") != format!("Bearer {t}") {
            return Some((401, status(401, "Unauthorized", "Unauthorized")));
        }
    } else if !s.header("authorization").is_empty() {
        return Some((
            400,
            status(
                400,
                "BadRequest",
                "no token expected with a client certificate",
            ),
        ));
    }
    if s.header("accept") != "application/json" {
        return Some((406, status(406, "NotAcceptable", "accept")));
    }
    if s.method == "PATCH" {
        let want = if s.path.ends_with("/scale") {
            "application/merge-patch+json"
        } else {
            "application/strategic-merge-patch+json"
        };
        if s.header("content-type") != want {
            return Some((
                415,
                status(415, "UnsupportedMediaType", &format!("the body of the request was in an unknown format - accepted media types include: {want}")),
            ));
        }
    }
    if s.method == "GET" && !s.body.is_empty() {
        return Some((400, status(400, "BadRequest", "a GET with a body")));
    }
    None
}

/// The kubeconfig of one context `azure-ctx` on `server`, trusting
/// `ca_pem`, with `user` as the user's fields (YAML, indented 4).
fn kubeconfig(dir: &Path, server: &str, ca_pem: &str, user: &str) -> PathBuf {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let text = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: azure-ctx\n\
         clusters:\n- name: aks-test\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\n\
         contexts:\n- name: azure-ctx\n  context:\n    cluster: aks-test\n    user: rollout\n    namespace: tandem\n\
         users:\n- name: rollout\n  user:\n{user}\n",
        b64(ca_pem)
    );
    let p = dir.join("kubeconfig");
    std::fs::write(&p, text).unwrap();
    p
}

fn token_user() -> String {
    format!("    token: {KUBE_TOKEN}")
}

fn target() -> KubeTarget {
    KubeTarget::parse("azure=azure-ctx").unwrap()
}

fn cluster(kc: &Path) -> KubeCluster {
    KubeCluster::load(kc, &target(), Duration::from_secs(5)).expect("load the kubeconfig")
}

struct NoOther;
impl ClusterStarter for NoOther {
    fn start(&mut self, cluster: &str) -> Result<(), String> {
        Err(format!("no other starter for {cluster}"))
    }
}

/// Waits for the starter's report on `cluster`.
async fn report(starter: &mut KubeStarter, within: Duration) -> StartReport {
    let t0 = Instant::now();
    loop {
        if let Some(r) = starter.finished().into_iter().next() {
            return r;
        }
        assert!(t0.elapsed() < within, "no start report within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A StatefulSet at 0 that, once scaled to N, reports one more ready
/// replica on each GET after the first (or stays at `stuck` when given).
fn rising_statefulset(stuck: Option<u32>) -> (Handler, Arc<AtomicU32>) {
    let replicas = Arc::new(AtomicU32::new(0));
    let gets = Arc::new(AtomicU32::new(0));
    let r = Arc::clone(&replicas);
    let h: Handler = Arc::new(move |s: &Seen| {
        if let Some(refused) = kube_refusal(s, Some(KUBE_TOKEN)) {
            return refused;
        }
        match (s.method.as_str(), s.path.as_str()) {
            ("PATCH", p) if p == format!("{STS_PATH}/scale") => {
                let Some(n) = s.json()["spec"]["replicas"].as_u64() else {
                    return (422, status(422, "Invalid", "spec.replicas: Required value"));
                };
                if s.json() != json!({"spec": {"replicas": n}}) {
                    return (422, status(422, "Invalid", "only spec.replicas is patched"));
                }
                r.store(n as u32, Ordering::SeqCst);
                (200, scale_answer(n as u32))
            }
            ("GET", STS_PATH) => {
                let n = r.load(Ordering::SeqCst);
                let g = if n > 0 {
                    gets.fetch_add(1, Ordering::SeqCst)
                } else {
                    0
                };
                let ready = stuck.unwrap_or(g).min(n);
                (200, statefulset(n, ready))
            }
            _ => not_found("the server could not find the requested resource"),
        }
    });
    (h, replicas)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_start_scales_the_statefulset_and_waits_until_every_replica_is_ready() {
    let dir = TempDir::new("https-kube-ready");
    let ca = Ca::new("fake kubernetes ca");
    let (h, replicas) = rising_statefulset(None);
    let api = Fake::start(&ca, None, h).await;
    let kc = kubeconfig(dir.path(), &api.url(), &ca.pem, &token_user());
    let mut starter = KubeStarter::new(
        vec![(cluster(&kc), 3)],
        Box::new(NoOther),
        Duration::from_secs(20),
        Duration::from_millis(50),
    );
    let times = starter.times();
    starter.start("azure").expect("under way");
    let r = report(&mut starter, Duration::from_secs(20)).await;
    assert_eq!(replicas.load(Ordering::SeqCst), 3);
    assert_eq!(r.cluster, "azure");
    let ms = r.ready_ms.expect("ready");
    assert!(
        r.by.contains("azure-ctx") && r.by.contains("replicas 3"),
        "{}",
        r.by
    );
    assert!(times.lock().unwrap()["azure"].is_ok());

    let seen = api.seen();
    assert_eq!(seen[0].method, "PATCH");
    assert_eq!(seen[0].path, format!("{STS_PATH}/scale"));
    assert_eq!(
        seen[0].header("content-type"),
        "application/merge-patch+json"
    );
    assert_eq!(seen[0].json(), json!({"spec": {"replicas": 3}}));
    let gets: Vec<&Seen> = seen[1..].iter().collect();
    // Ready rises 0, 1, 2, 3 over the polls: four GETs, the last ready.
    assert_eq!(gets.len(), 4, "{gets:#?}");
    for s in &seen {
        assert_eq!(s.header("authorization"), format!("Bearer {KUBE_TOKEN}"));
        assert_eq!(s.header("host"), format!("127.0.0.1:{}", api.addr.port()));
    }
    for g in gets {
        assert_eq!((g.method.as_str(), g.path.as_str()), ("GET", STS_PATH));
    }
    // Three polls 50 ms apart at least.
    assert!(ms >= 150, "ready after {ms} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefulset_never_ready_times_out_naming_the_cluster() {
    let dir = TempDir::new("https-kube-stuck");
    let ca = Ca::new("fake kubernetes ca");
    let (h, _) = rising_statefulset(Some(1));
    let api = Fake::start(&ca, None, h).await;
    let kc = kubeconfig(dir.path(), &api.url(), &ca.pem, &token_user());
    let mut starter = KubeStarter::new(
        vec![(cluster(&kc), 3)],
        Box::new(NoOther),
        Duration::from_millis(600),
        Duration::from_millis(50),
    );
    starter.start("azure").expect("under way");
    let r = report(&mut starter, Duration::from_secs(10)).await;
    let why = r.ready_ms.expect_err("never ready");
    assert!(
        why.contains("kubernetes cluster azure (context azure-ctx")
            && why.contains("1 of 3 replicas ready after"),
        "{why}"
    );
    // It polled until the deadline, not once.
    assert!(api.seen().len() >= 5, "{}", api.seen().len());
}

#[test]
fn a_server_of_another_ca_is_refused_before_any_request() {
    // The starter called outside any runtime (its work runs on a thread
    // of its own then); the server on a runtime of the test's.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = TempDir::new("https-kube-ca");
    let ca = Ca::new("fake kubernetes ca");
    let other = Ca::new("another ca");
    let (h, replicas) = rising_statefulset(None);
    let api = rt.block_on(Fake::start(&ca, None, h));
    let kc = kubeconfig(dir.path(), &api.url(), &other.pem, &token_user());
    let mut starter = KubeStarter::new(
        vec![(cluster(&kc), 3)],
        Box::new(NoOther),
        Duration::from_secs(5),
        Duration::from_millis(50),
    );
    starter.start("azure").expect("under way");
    let t0 = Instant::now();
    let r = loop {
        if let Some(r) = starter.finished().pop() {
            break r;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no report");
        std::thread::sleep(Duration::from_millis(10));
    };
    let why = r.ready_ms.expect_err("refused");
    assert!(
        why.contains("kubernetes cluster azure") && why.contains("TLS handshake failed"),
        "{why}"
    );
    assert!(
        why.contains("UnknownIssuer") || why.contains("issuer"),
        "{why}"
    );
    assert!(api.seen().is_empty());
    assert_eq!(replicas.load(Ordering::SeqCst), 0);
    // The server saw the handshake fail (the client sent its alert).
    let t0 = Instant::now();
    while api.failed_handshakes.load(Ordering::SeqCst) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "no failed handshake");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Clusters without --kube go to the other starter.
    assert_eq!(
        starter.start("gcp").unwrap_err(),
        "no other starter for gcp"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_a_clear_error_naming_cluster_and_context() {
    let dir = TempDir::new("https-kube-401");
    let ca = Ca::new("fake kubernetes ca");
    let (h, replicas) = rising_statefulset(None);
    let api = Fake::start(&ca, None, h).await;
    let kc = kubeconfig(dir.path(), &api.url(), &ca.pem, "    token: expired-token");
    let mut starter = KubeStarter::new(
        vec![(cluster(&kc), 3)],
        Box::new(NoOther),
        Duration::from_secs(5),
        Duration::from_millis(50),
    );
    starter.start("azure").expect("under way");
    let why = report(&mut starter, Duration::from_secs(10))
        .await
        .ready_ms
        .expect_err("refused");
    assert_eq!(
        why,
        format!(
            "kubernetes cluster azure (context azure-ctx, {}): the API server refused the credentials of the context (HTTP 401): Unauthorized",
            api.url()
        )
    );
    assert!(!why.contains("expired-token"));
    assert_eq!(replicas.load(Ordering::SeqCst), 0);
    assert_eq!(api.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_scale_is_tried_again_and_a_missing_statefulset_is_named() {
    let dir = TempDir::new("https-kube-409");
    let ca = Ca::new("fake kubernetes ca");
    let conflicts = Arc::new(AtomicU32::new(1));
    let c = Arc::clone(&conflicts);
    let h: Handler = Arc::new(move |s: &Seen| {
        if let Some(r) = kube_refusal(s, Some(KUBE_TOKEN)) {
            return r;
        }
        match (s.method.as_str(), s.path.as_str()) {
            ("PATCH", p) if p == format!("{STS_PATH}/scale") => {
                if c.load(Ordering::SeqCst) > 0 {
                    c.fetch_sub(1, Ordering::SeqCst);
                    return (409, status(409, "Conflict", "Operation cannot be fulfilled on statefulsets.apps \"tandem-node\": the object has been modified; please apply your changes to the latest version and try again"));
                }
                (200, scale_answer(3))
            }
            _ => not_found("statefulsets.apps \"tandem-node\" not found"),
        }
    });
    let api = Fake::start(&ca, None, h).await;
    let kc = kubeconfig(dir.path(), &api.url(), &ca.pem, &token_user());
    let k = cluster(&kc);
    k.scale(3).await.expect("scaled on the second try");
    assert_eq!(api.seen().len(), 2);
    // Three conflicts in a row: given up, with the server's message.
    conflicts.store(3, Ordering::SeqCst);
    let e = k.scale(3).await.unwrap_err();
    assert!(
        matches!(
            &e.failure,
            Failure::Kube(tandem_rollout::kubernetes::KubeError::Refused { status: 409, .. })
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("the object has been modified"),
        "{e}"
    );
    assert_eq!(api.seen().len(), 5);
    // 404 names what is missing.
    let e = k.state().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("kubernetes cluster azure (context azure-ctx, {}): kubernetes: statefulset tandem/tandem-node not found", api.url())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_patches_the_template_and_drain_waits_out_a_disruption_budget() {
    let dir = TempDir::new("https-kube-drain");
    let ca = Ca::new("fake kubernetes ca");
    let blocked = Arc::new(AtomicU32::new(2));
    let b = Arc::clone(&blocked);
    let pods = json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "5120"},
        "items": [
            {"metadata": {"name": "tandem-node-0", "namespace": "tandem",
                          "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "tandem-node"}]}},
            {"metadata": {"name": "tandem-warmup-x7k2p", "namespace": "tandem",
                          "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "tandem-warmup"}]}},
            {"metadata": {"name": "tandem-edge-5f6d-abcde", "namespace": "tandem"}}
        ]})
    .to_string();
    let h: Handler = Arc::new(move |s: &Seen| {
        if let Some(r) = kube_refusal(s, Some(KUBE_TOKEN)) {
            return r;
        }
        let body = s.json();
        match (s.method.as_str(), s.path.as_str()) {
            ("PATCH", STS_PATH) => {
                let at = &body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"];
                if at.as_str() != Some("2026-12-05T06:00:00Z") {
                    return (422, status(422, "Invalid", "annotation"));
                }
                (200, statefulset(3, 3))
            }
            ("PATCH", "/api/v1/nodes/aks-pool-1") if body == json!({"spec": {"unschedulable": true}}) => {
                (200, json!({"kind": "Node", "apiVersion": "v1", "metadata": {"name": "aks-pool-1"}, "spec": {"unschedulable": true}}).to_string())
            }
            ("GET", "/api/v1/pods?fieldSelector=spec.nodeName%3Daks-pool-1") => (200, pods.clone()),
            ("POST", p) if p.ends_with("/eviction") => {
                if s.header("content-type") != "application/json"
                    || body["kind"] != "Eviction"
                    || body["apiVersion"] != "policy/v1"
                {
                    return (400, status(400, "BadRequest", "not an Eviction"));
                }
                match p {
                    "/api/v1/namespaces/tandem/pods/tandem-node-0/eviction" => {
                        if b.load(Ordering::SeqCst) > 0 {
                            b.fetch_sub(1, Ordering::SeqCst);
                            return (429, status(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget."));
                        }
                        (201, json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}).to_string())
                    }
                    "/api/v1/namespaces/tandem/pods/tandem-edge-5f6d-abcde/eviction" => {
                        not_found("pods \"tandem-edge-5f6d-abcde\" not found")
                    }
                    _ => not_found("no such pod"),
                }
            }
            _ => not_found("the server could not find the requested resource"),
        }
    });
    let api = Fake::start(&ca, None, h).await;
    let kc = kubeconfig(dir.path(), &api.url(), &ca.pem, &token_user());
    let k = cluster(&kc);
    k.restart("2026-12-05T06:00:00Z").await.expect("restart");
    let evicted = k
        .drain(
            "aks-pool-1",
            Duration::from_secs(5),
            Duration::from_millis(50),
        )
        .await
        .expect("drained");
    assert_eq!(evicted, 2);
    let seen: Vec<(String, String)> = api
        .seen()
        .iter()
        .map(|s| (s.method.clone(), s.path.clone()))
        .collect();
    let node0 = "/api/v1/namespaces/tandem/pods/tandem-node-0/eviction".to_owned();
    assert_eq!(
        seen,
        vec![
            ("PATCH".into(), STS_PATH.into()),
            ("PATCH".into(), "/api/v1/nodes/aks-pool-1".into()),
            (
                "GET".into(),
                "/api/v1/pods?fieldSelector=spec.nodeName%3Daks-pool-1".into()
            ),
            ("POST".into(), node0.clone()),
            ("POST".into(), node0.clone()),
            ("POST".into(), node0),
            (
                "POST".into(),
                "/api/v1/namespaces/tandem/pods/tandem-edge-5f6d-abcde/eviction".into()
            ),
        ]
    );
    // A budget that never allows it: the deadline ends the drain with 429.
    blocked.store(u32::MAX, Ordering::SeqCst);
    let e = k
        .drain(
            "aks-pool-1",
            Duration::from_millis(300),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("refused for now (a PodDisruptionBudget)"),
        "{e}"
    );
}

/// A StatefulSet in the middle of a rolling update: `generation` against
/// the `observed` one, pods on the `current` and `update` revisions,
/// `updated` of them on the newest, `ready` ready (of 3).
fn rolling(observed: u64, current: &str, update: &str, updated: u32, ready: u32) -> String {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "tandem-node", "namespace": "tandem", "generation": 3},
           "spec": {"replicas": 3, "serviceName": "tandem-node"},
           "status": {"observedGeneration": observed, "replicas": 3, "readyReplicas": ready,
                      "updatedReplicas": updated, "currentRevision": current,
                      "updateRevision": update}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_wait_ends_once_every_replica_runs_the_new_template() {
    use tandem_rollout::kube_actuator::restart_blocking;
    let dir = TempDir::new("https-kube-restart-wait");
    let ca = Ca::new("fake kubernetes ca");
    let gets = Arc::new(AtomicU32::new(0));
    let stuck = Arc::new(AtomicBool::new(false));
    let (g, st) = (Arc::clone(&gets), Arc::clone(&stuck));
    let h: Handler = Arc::new(move |s: &Seen| {
        if let Some(r) = kube_refusal(s, Some(KUBE_TOKEN)) {
            return r;
        }
        match (s.method.as_str(), s.path.as_str()) {
            ("PATCH", STS_PATH) => (200, rolling(2, "rev-a", "rev-a", 3, 3)),
            ("GET", STS_PATH) if st.load(Ordering::SeqCst) => {
                (200, rolling(3, "rev-a", "rev-b", 2, 3))
            }
            ("GET", STS_PATH) => {
                let body = match g.fetch_add(1, Ordering::SeqCst) {
                    // The controller has not seen the new template yet:
                    // every pod ready, but that is the old state.
                    0 => rolling(2, "rev-a", "rev-a", 3, 3),
                    1 => {
                        (
                            503,
                            status(503, "ServiceUnavailable", "etcd leader changed"),
                        )
                            .1
                    }
                    2 => rolling(3, "rev-a", "rev-b", 1, 2),
                    3 => rolling(3, "rev-a", "rev-b", 3, 2),
                    _ => rolling(3, "rev-b", "rev-b", 3, 3),
                };
                let code = if body.contains("ServiceUnavailable") {
                    503
                } else {
                    200
                };
                (code, body)
            }
            _ => not_found("the server could not find the requested resource"),
        }
    });
    let api = Fake::start(&ca, None, h).await;
    let kc = kubeconfig(dir.path(), &api.url(), &ca.pem, &token_user());
    let k = cluster(&kc);
    let every = Duration::from_millis(20);
    let done = tokio::task::spawn_blocking(move || {
        let took = restart_blocking(
            &k,
            "2026-12-06T16:00:00Z",
            Some(Duration::from_secs(5)),
            every,
        );
        (k, took)
    })
    .await
    .unwrap();
    let (k, took) = done;
    assert!(took.expect("restarted").is_some());
    assert_eq!(
        gets.load(Ordering::SeqCst),
        5,
        "polled until all three were updated and ready"
    );
    // Without --wait: the patch only.
    let (k, took) = tokio::task::spawn_blocking(move || {
        let took = restart_blocking(&k, "2026-12-06T16:01:00Z", None, every);
        (k, took)
    })
    .await
    .unwrap();
    assert_eq!(took.expect("restarted"), None);
    assert_eq!(gets.load(Ordering::SeqCst), 5);
    // An update that never ends: the deadline names what was seen.
    stuck.store(true, Ordering::SeqCst);
    let e = tokio::task::spawn_blocking(move || {
        restart_blocking(
            &k,
            "2026-12-06T16:02:00Z",
            Some(Duration::from_millis(200)),
            every,
        )
    })
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(
            e.failure,
            Failure::NotUpdated {
                ready: 3,
                want: 3,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("context azure-ctx"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_from_the_kubeconfig_authenticates() {
    let dir = TempDir::new("https-kube-mtls");
    let ca = Ca::new("fake kubernetes ca");
    let clients = Ca::new("kubernetes client ca");
    let (h0, _) = rising_statefulset(Some(3));
    // The client-certificate user sends no token.
    let h: Handler = Arc::new(move |s: &Seen| {
        if let Some(r) = kube_refusal(s, None) {
            return r;
        }
        let mut with = s.clone();
        with.headers.insert(
            "authorization",
            format!("Bearer {KUBE_TOKEN}").parse().unwrap(),
        );
        h0(&with)
    });
    let api = Fake::start(&ca, Some(&clients), h).await;
    let me = clients.issue(&Leaf::new("system:serviceaccount:tandem:rollout", 9));
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let user = format!(
        "    client-certificate-data: {}\n    client-key-data: {}",
        b64(&me.cert_pem),
        b64(&me.key_pem)
    );
    let kc = kubeconfig(dir.path(), &api.url(), &ca.pem, &user);
    let k = cluster(&kc);
    k.scale(3)
        .await
        .expect("scaled with the client certificate");
    let st = k.state().await.expect("state");
    assert_eq!((st.replicas, st.ready), (3, 3));
    assert!(api
        .seen()
        .iter()
        .all(|s| s.header("authorization").is_empty()));
    // The same server refuses a client without a certificate.
    let kc = kubeconfig(dir.path(), &api.url(), &ca.pem, &token_user());
    let e = cluster(&kc).scale(3).await.unwrap_err();
    assert!(
        matches!(
            &e.failure,
            Failure::Transport(HttpsError::Tls { .. } | HttpsError::Unreachable { .. })
        ),
        "{e}"
    );
}

/// A credential plugin in `dir/bin/NAME` (a shell script running
/// `body`); the kubeconfig names it `./bin/NAME` (relative to its
/// directory, as kubectl reads it).
fn plugin(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let p = bin.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A plugin that counts its runs in `$STATE/runs`, keeps what it got
/// (`KUBERNETES_EXEC_INFO`, its arguments) and prints the token on the
/// line of `$STATE/tokens` that is its run's number (the last line after
/// that), expiring at `$EXPIRES`.
const COUNTING_PLUGIN: &str = r#"n=$(cat "$STATE/runs" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$STATE/runs"
printf '%s' "$KUBERNETES_EXEC_INFO" > "$STATE/info-$n"
echo "$@" > "$STATE/args-$n"
tok=$(sed -n "${n}p" "$STATE/tokens"); [ -n "$tok" ] || tok=$(tail -n 1 "$STATE/tokens")
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"%s"}}' "$tok" "$EXPIRES""#;

/// The user fields of a kubeconfig running `./bin/NAME` with `STATE` and
/// `EXPIRES` in its environment.
fn exec_user(name: &str, state: &Path, expires: &str) -> String {
    format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./bin/{name}\n      args: [eks, get-token, --cluster-name, aks-test]\n      env:\n      - name: STATE\n        value: {}\n      - name: EXPIRES\n        value: '{expires}'\n      provideClusterInfo: true\n      interactiveMode: IfAvailable\n      installHint: install the get-token plugin",
        state.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_plugin_gives_the_token_and_runs_again_after_a_401() {
    let dir = TempDir::new("https-kube-exec");
    let ca = Ca::new("fake kubernetes ca");
    let (h, replicas) = rising_statefulset(None);
    let api = Fake::start(&ca, None, h).await;
    plugin(dir.path(), "get-token", COUNTING_PLUGIN);
    // The first token is stale: the API server refuses it; the second is
    // good until 2999.
    std::fs::write(
        dir.path().join("tokens"),
        format!("stale-token-77\n{KUBE_TOKEN}\n"),
    )
    .unwrap();
    let user = exec_user("get-token", dir.path(), "2999-01-01T00:00:00Z");
    let kc = kubeconfig(dir.path(), &api.url(), &ca.pem, &user);
    let k = cluster(&kc);
    assert!(!format!("{k:?}").contains("get-token --cluster-name"));
    let exec_runs = {
        let k = k.clone();
        move || k.exec().expect("a plugin").runs()
    };
    let mut starter = KubeStarter::new(
        vec![(k, 3)],
        Box::new(NoOther),
        Duration::from_secs(20),
        Duration::from_millis(50),
    );
    starter.start("azure").expect("under way");
    let r = report(&mut starter, Duration::from_secs(20)).await;
    r.ready_ms.expect("ready");
    assert_eq!(replicas.load(Ordering::SeqCst), 3);
    // Run twice: the first token refused (401), then one token for the
    // scale and every poll.
    assert_eq!(exec_runs(), 2);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("runs"))
            .unwrap()
            .trim(),
        "2"
    );
    let seen = api.seen();
    assert_eq!(seen[0].header("authorization"), "Bearer stale-token-77");
    assert_eq!(seen[0].path, format!("{STS_PATH}/scale"));
    assert_eq!(seen[1].path, format!("{STS_PATH}/scale"));
    assert_eq!(seen[1].json(), json!({"spec": {"replicas": 3}}));
    assert_eq!(seen.len(), 6, "the 401, the scale again, four polls");
    for s in &seen[1..] {
        assert_eq!(s.header("authorization"), format!("Bearer {KUBE_TOKEN}"));
    }
    // What the plugin was given: its arguments, and the cluster it asked
    // for (provideClusterInfo) in a non-interactive ExecCredential.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("args-1"))
            .unwrap()
            .trim(),
        "eks get-token --cluster-name aks-test"
    );
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("info-1")).unwrap())
            .expect("KUBERNETES_EXEC_INFO is JSON");
    let b64 = base64::engine::general_purpose::STANDARD.encode(ca.pem.as_bytes());
    assert_eq!(
        info,
        json!({"apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
               "spec": {"interactive": false,
                        "cluster": {"server": api.url(), "certificate-authority-data": b64}}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_plugin_token_is_asked_for_again_and_a_failing_plugin_is_named() {
    let dir = TempDir::new("https-kube-exec-expired");
    let ca = Ca::new("fake kubernetes ca");
    let (h, _) = rising_statefulset(None);
    let api = Fake::start(&ca, None, h).await;
    plugin(dir.path(), "get-token", COUNTING_PLUGIN);
    std::fs::write(dir.path().join("tokens"), format!("{KUBE_TOKEN}\n")).unwrap();
    // Every token the plugin gives has already expired: each call runs it.
    let user = exec_user("get-token", dir.path(), "2000-01-01T00:00:00Z");
    let kc = kubeconfig(dir.path(), &api.url(), &ca.pem, &user);
    let k = cluster(&kc);
    k.scale(2).await.expect("scaled");
    assert_eq!(k.state().await.expect("read").replicas, 2);
    k.state().await.expect("read");
    assert_eq!(k.exec().unwrap().runs(), 3);
    assert_eq!(api.seen().len(), 3);

    // A plugin that fails: named with what it said; nothing is sent.
    plugin(
        dir.path(),
        "fails",
        "echo 'error: you must be logged in to the server (run: cloud login)' >&2; exit 3",
    );
    let kc = kubeconfig(
        dir.path(),
        &api.url(),
        &ca.pem,
        &exec_user("fails", dir.path(), ""),
    );
    let before = api.seen().len();
    let why = cluster(&kc).scale(3).await.unwrap_err().to_string();
    assert_eq!(
        why,
        format!(
            "kubernetes cluster azure (context azure-ctx, {}): credential plugin \"./bin/fails\" (users[rollout].user.exec): exited with exit status: 3: error: you must be logged in to the server (run: cloud login)",
            api.url()
        )
    );
    // Not installed: the install hint says what to do.
    let kc = kubeconfig(
        dir.path(),
        &api.url(),
        &ca.pem,
        &exec_user("missing", dir.path(), ""),
    );
    let why = cluster(&kc).scale(3).await.unwrap_err().to_string();
    assert!(
        why.contains("credential plugin \"./bin/missing\"")
            && why.contains("No such file or directory")
            && why.ends_with("; install the get-token plugin"),
        "{why}"
    );
    // Something that is not an ExecCredential, and a client certificate
    // instead of a token.
    for (body, want) in [
        (
            "echo 'token: abc'",
            "its output is not an ExecCredential (not JSON",
        ),
        (
            r#"printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"clientCertificateData":"x","clientKeyData":"y"}}'"#,
            "it gave a client certificate",
        ),
        (
            r#"printf '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"t"}}'"#,
            "apiVersion Some(\"client.authentication.k8s.io/v1beta1\")",
        ),
    ] {
        plugin(dir.path(), "odd", body);
        let kc = kubeconfig(
            dir.path(),
            &api.url(),
            &ca.pem,
            &exec_user("odd", dir.path(), ""),
        );
        let why = cluster(&kc).state().await.unwrap_err().to_string();
        assert!(why.contains(want), "{body}: {why}");
    }
    assert_eq!(api.seen().len(), before, "no request without a token");

    // A plugin that hangs is killed at the deadline.
    plugin(dir.path(), "hangs", "sleep 30");
    let kc = kubeconfig(
        dir.path(),
        &api.url(),
        &ca.pem,
        &exec_user("hangs", dir.path(), ""),
    );
    let ctx = tandem_rollout::kubeconfig::load(&kc, "azure-ctx").unwrap();
    let t0 = Instant::now();
    let e = ctx
        .exec
        .expect("a plugin")
        .run(Duration::from_millis(300))
        .unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(
        e.to_string()
            .ends_with("did not finish within 300ms (killed)"),
        "{e}"
    );
}

#[test]
fn bad_kubeconfigs_are_refused_naming_file_and_field() {
    let dir = TempDir::new("https-kubeconfig");
    let ca = Ca::new("ca");
    let t = Duration::from_secs(1);
    let kc = kubeconfig(dir.path(), "https://127.0.0.1:6443", &ca.pem, &token_user());
    let file = kc.display().to_string();
    let err = |kc: &Path, target: &str| {
        KubeCluster::load(kc, &KubeTarget::parse(target).unwrap(), t)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(&kc, "azure=prod"),
        format!("kubeconfig {file}: contexts: no entry named \"prod\" (the file has: azure-ctx)")
    );
    let k = KubeCluster::load(
        &kc,
        &KubeTarget::parse("azure=azure-ctx/ns2/sts-2").unwrap(),
        t,
    )
    .unwrap();
    assert_eq!(
        (k.namespace.as_str(), k.statefulset.as_str()),
        ("ns2", "sts-2")
    );
    let cases = [
        (
            "    exec:\n      command: kubelogin",
            "users[rollout].user.exec.apiVersion: missing",
        ),
        (
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1alpha1\n      command: kubelogin",
            "users[rollout].user.exec.apiVersion: \"client.authentication.k8s.io/v1alpha1\" is not one of",
        ),
        (
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1",
            "users[rollout].user.exec.command: missing",
        ),
        (
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: kubelogin\n      args: get-token",
            "users[rollout].user.exec.args: not a list",
        ),
        (
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: kubelogin\n      args: [get-token, 3]",
            "users[rollout].user.exec.args[1]: not a string",
        ),
        (
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: kubelogin\n      env:\n      - value: x",
            "users[rollout].user.exec.env[0].name: missing",
        ),
        (
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: kubelogin\n      interactiveMode: Always",
            "users[rollout].user.exec.interactiveMode: \"Always\" is refused",
        ),
        (
            "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: kubelogin\n      provideClusterInfo: yes please",
            "users[rollout].user.exec.provideClusterInfo: not true or false",
        ),
        (
            "    token: t\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: kubelogin",
            "users[rollout].user.exec: give either a token",
        ),
        (
            "    auth-provider:\n      name: gcp",
            "users[rollout].user.auth-provider: not supported",
        ),
        ("    token: ''", "users[rollout].user.token: empty"),
        (
            "    client-certificate-data: '@@@'\n    client-key-data: 'AAAA'",
            "users[rollout].user.client-certificate-data: not base64",
        ),
        (
            "    client-key-data: 'AAAA'",
            "users[rollout].user.client-key-data: a client certificate and its key go together",
        ),
        (
            "    username: admin",
            "users[rollout].user.username: basic authentication is not supported",
        ),
        ("    {}", "users[rollout].user: no credentials"),
    ];
    for (user, want) in cases {
        let kc = kubeconfig(dir.path(), "https://127.0.0.1:6443", &ca.pem, user);
        let e = err(&kc, "azure=azure-ctx");
        assert!(
            e.starts_with(&format!("kubeconfig {file}: {want}")),
            "{user:?}: {e}"
        );
    }
    let kc = kubeconfig(dir.path(), "http://127.0.0.1:6443", &ca.pem, &token_user());
    assert!(err(&kc, "azure=azure-ctx").contains(
        "clusters[aks-test].cluster.server: \"http://127.0.0.1:6443\" is not https://host[:port]"
    ));
    let kc = kubeconfig(
        dir.path(),
        "https://127.0.0.1:6443",
        "not a certificate",
        &token_user(),
    );
    assert!(err(&kc, "azure=azure-ctx")
        .contains("clusters[aks-test].cluster.certificate-authority-data: no PEM certificate"));
    let text = std::fs::read_to_string(&kc).unwrap().replace(
        "    certificate-authority-data",
        "    insecure-skip-tls-verify: true\n    certificate-authority-data",
    );
    std::fs::write(&kc, text).unwrap();
    assert!(err(&kc, "azure=azure-ctx")
        .contains("clusters[aks-test].cluster.insecure-skip-tls-verify: refused"));
    std::fs::write(&kc, "- a list").unwrap();
    assert!(err(&kc, "azure=azure-ctx").contains(": (file): not a mapping"));
    assert!(err(&dir.path().join("missing"), "azure=azure-ctx").contains("missing: (file): "));
    // The flag itself.
    for bad in [
        "azure",
        "=ctx",
        "azure=",
        "azure=ctx/ns",
        "azure=ctx/NS/sts",
    ] {
        assert!(KubeTarget::parse(bad).is_err(), "{bad}");
    }
}

// ---- Cloudflare ----

fn kv_target() -> KvTarget {
    KvTarget {
        account_id: ACCOUNT.into(),
        namespace_id: NAMESPACE.into(),
        origins: [
            ("aws", "https://aws.origin.example"),
            ("azure", "https://azure.origin.example"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    }
}

const KV_PATH: &str =
    "/client/v4/accounts/0123456789abcdef0123456789abcdef/storage/kv/namespaces/fedcba9876543210fedcba9876543210/values/routes";

/// Cloudflare's v4 envelope.
fn envelope(success: bool, errors: Value) -> String {
    json!({"success": success, "errors": errors, "messages": [], "result": null}).to_string()
}

/// Workers KV's write endpoint: the token, the path and a routes
/// document whose weights sum to 100; answers from `next` while it has
/// any (status), then 200.
fn kv_api(next: Arc<Mutex<Vec<u16>>>, docs: Arc<Mutex<Vec<Value>>>) -> Handler {
    Arc::new(move |s: &Seen| {
        if s.header("authorization") != format!("Bearer {CF_TOKEN}") {
            return (
                401,
                envelope(
                    false,
                    json!([{"code": 10000, "message": "Authentication error"}]),
                ),
            );
        }
        if s.method != "PUT" || s.path != KV_PATH {
            return (
                404,
                envelope(
                    false,
                    json!([{"code": 7003, "message": "Could not route to the requested path"}]),
                ),
            );
        }
        let doc = s.json();
        let sum: u64 = doc["clusters"]
            .as_array()
            .map_or(0, |cs| cs.iter().filter_map(|c| c["weight"].as_u64()).sum());
        if s.header("content-type") != "text/plain" || sum != 100 {
            return (
                400,
                envelope(false, json!([{"code": 10001, "message": "bad value"}])),
            );
        }
        let code = {
            let mut n = next.lock().unwrap();
            if n.is_empty() {
                200
            } else {
                n.remove(0)
            }
        };
        match code {
            200 => {
                docs.lock().unwrap().push(doc);
                (200, envelope(true, json!([])))
            }
            429 => (
                429,
                envelope(
                    false,
                    json!([{"code": 971, "message": "Please wait and consider throttling your request speed"}]),
                ),
            ),
            401 => (
                401,
                envelope(
                    false,
                    json!([{"code": 10000, "message": "Authentication error"}]),
                ),
            ),
            c => (
                c,
                envelope(false, json!([{"code": 10013, "message": "internal error"}])),
            ),
        }
    })
}

/// Two clusters; the latency gates are loose: these tests are about the
/// actuators, and a host shared with other builds stalls both clusters
/// for hundreds of milliseconds at times.
fn two_cluster_plan(edge_admin: &str, azure_cold: bool) -> Plan {
    let cold = if azure_cold { ", start: cold" } else { "" };
    let text = format!(
        "release: https-actuators\n\
         clusters:\n  aws: {{ version: stable, zones: [z] }}\n  azure: {{ version: canary, zones: [z]{cold} }}\n\
         edges:\n  - http://{edge_admin}\n\
         metrics: {{ source: scrape, interval: 500ms }}\n\
         baseline: {{ window: 2s }}\n\
         gates:\n  latency_p99_ms_max: 5000\n  latency_p99_vs_baseline_max: 1000\n  error_ratio_max: 0.01\n  replica_lag_seq_max: 1000\n  output_hash_divergence: 0\n  min_requests: 100\n  breach_for: 1s\n\
         phases:\n  - {{ name: canary, hold: 2s, weights: {{ aws: 70, azure: 30 }} }}\n  - {{ name: done, hold: 0, weights: {{ aws: 50, azure: 50 }} }}\n\
         on_failure: rollback\n"
    );
    Plan::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn weights_of(doc: &Value) -> BTreeMap<String, u64> {
    doc["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_write_carries_the_weights_and_a_rate_limit_is_written_later() {
    let ca = Ca::new("fake cloudflare ca");
    let next = Arc::new(Mutex::new(vec![200, 429, 401]));
    let docs = Arc::new(Mutex::new(Vec::new()));
    let api = Fake::start(&ca, None, kv_api(Arc::clone(&next), Arc::clone(&docs))).await;
    let target = CloudflareTarget {
        kv: kv_target(),
        token: CF_TOKEN.into(),
        api: format!("{}/client/v4", api.url()),
        roots: Roots::Pem(ca.pem.clone().into_bytes()),
    };
    let mut layer = CloudflareLayer::new(target.clone(), Duration::from_secs(5)).unwrap();
    assert!(!format!("{layer:?}{target:?}").contains(CF_TOKEN));
    let plan = two_cluster_plan("127.0.0.1:1", false);
    let w = |a: u32, z: u32| -> BTreeMap<String, u32> {
        [("aws".to_owned(), a), ("azure".to_owned(), z)].into()
    };
    layer.apply(&plan, &w(70, 30)).await.expect("written");
    assert!(!layer.pending());
    // 429: kept, and written by the next flush.
    let e = layer.apply(&plan, &w(50, 50)).await.unwrap_err();
    assert!(
        matches!(&e, CloudflareError::Refused { status: 429, messages } if messages.contains("971")),
        "{e}"
    );
    assert!(layer.pending());
    // 401 on the retry: reported and dropped.
    let e = layer.flush().await.expect("a pending write").unwrap_err();
    assert!(
        matches!(&e, CloudflareError::Refused { status: 401, .. }),
        "{e}"
    );
    assert!(!e.to_string().contains(CF_TOKEN));
    assert!(!layer.pending());
    assert!(layer.flush().await.is_none());
    // Another 429, then the flush lands it.
    next.lock().unwrap().push(429);
    layer.apply(&plan, &w(100, 0)).await.unwrap_err();
    layer.flush().await.expect("pending").expect("written now");
    let docs = docs.lock().unwrap().clone();
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[0],
        json!({"clusters": [
            {"name": "aws", "role": "stable", "weight": 70, "origin": "https://aws.origin.example"},
            {"name": "azure", "role": "canary", "weight": 30, "origin": "https://azure.origin.example"}
        ]})
    );
    assert_eq!(
        weights_of(&docs[1]),
        [("aws".to_owned(), 100), ("azure".to_owned(), 0)].into()
    );
    // Every request: PUT, the KV path, the bearer token, text/plain.
    for s in api.seen() {
        assert_eq!((s.method.as_str(), s.path.as_str()), ("PUT", KV_PATH));
        assert_eq!(s.header("authorization"), format!("Bearer {CF_TOKEN}"));
        assert_eq!(s.header("content-type"), "text/plain");
    }
    assert_eq!(api.seen().len(), 5);
    // A refused token on the first write of another layer.
    let mut bad = target;
    bad.token = "wrong".into();
    let mut layer = CloudflareLayer::new(bad, Duration::from_secs(5)).unwrap();
    let e = layer.apply(&plan, &w(70, 30)).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "cloudflare: the API refused the write (HTTP 401): 10000 Authentication error"
    );
}

// ---- The run loop with a cold cluster on the fake Kubernetes API ----

mod world {
    use super::*;
    use tandem_edge::config::{ClusterConfig, NodeAddr, Role as EdgeRole};
    use tandem_edge::EdgeConfig;
    use tandem_log::{FileLog, FileLogConfig, FsyncPolicy, Log};
    use tandem_node::{Node, NodeConfig};

    pub const ADMIN_TOKEN: &str = "https-actuators-admin-token";

    /// A node over the shared log served on `listener`; stopped on drop.
    pub struct TestNode {
        node: Arc<Node>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl TestNode {
        pub fn start(
            dir: &Path,
            cluster: &str,
            canary: bool,
            log: &Arc<dyn Log>,
            listener: TcpListener,
        ) -> TestNode {
            let mut cfg = NodeConfig {
                data_dir: dir.join(cluster),
                node: format!("{cluster}-0"),
                cluster: cluster.into(),
                zone: "z".into(),
                role: if canary {
                    tandem_node::config::Role::Canary
                } else {
                    tandem_node::config::Role::Stable
                },
                ..NodeConfig::default()
            };
            cfg.log.fsync = false;
            cfg.limits.account_rate = 0;
            cfg.limits.checkpoint_every = 50;
            let node = Node::start_with_logs(cfg, vec![Arc::clone(log)]).expect("start node");
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(tandem_node::server::serve(
                listener,
                Arc::clone(&node),
                async move {
                    let _ = rx.await;
                },
                Duration::ZERO,
            ));
            TestNode {
                node,
                stop: Some(tx),
            }
        }
    }

    impl Drop for TestNode {
        fn drop(&mut self) {
            if let Some(tx) = self.stop.take() {
                let _ = tx.send(());
            }
            let node = Arc::clone(&self.node);
            std::thread::spawn(move || node.stop());
        }
    }

    pub fn shared_log(dir: &Path) -> Arc<dyn Log> {
        let fc = FileLogConfig {
            fsync: FsyncPolicy::Never,
            ..FileLogConfig::default()
        };
        Arc::new(FileLog::open(dir.join("log"), fc).expect("open the shared log"))
    }

    pub async fn edge(aws: SocketAddr, azure: SocketAddr) -> tandem_edge::Served {
        let cluster = |name: &str, canary: bool, addr: SocketAddr, weight: u32| ClusterConfig {
            name: name.into(),
            version: if canary { "2.0.0" } else { "1.0.0" }.into(),
            role: if canary {
                EdgeRole::Canary
            } else {
                EdgeRole::Stable
            },
            weight,
            nodes: vec![NodeAddr {
                addr: addr.to_string(),
                zone: "z".into(),
            }],
        };
        let mut cfg = EdgeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            admin_token: ADMIN_TOKEN.into(),
            zone: "z".into(),
            clusters: vec![
                cluster("aws", false, aws, 100),
                cluster("azure", true, azure, 0),
            ],
            drain_timeout_secs: 2,
            ..EdgeConfig::default()
        };
        cfg.health.interval_ms = 50;
        tandem_edge::serve_in_process(cfg, Duration::from_secs(2))
            .await
            .expect("serve the edge")
    }

    type Client = crate::place_order::HttpClient;

    fn client() -> Client {
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new())
    }

    use crate::place_order::place;

    /// Waits until an order goes through `addr`.
    pub async fn first_order(addr: SocketAddr) {
        let c = client();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut n = 1_000_000_000;
        while place(&c, addr, n).await != Ok(200) {
            assert!(Instant::now() < deadline, "no order through the edge");
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Orders through the edge every 10 ms until stopped: (ok, failed).
    pub struct Load {
        stop: Arc<AtomicBool>,
        task: tokio::task::JoinHandle<(u64, u64)>,
    }

    impl Load {
        pub fn start(addr: SocketAddr, per_10ms: u64) -> Load {
            let stop = Arc::new(AtomicBool::new(false));
            let s = Arc::clone(&stop);
            let task = tokio::spawn(async move {
                let c = client();
                let ok = Arc::new(AtomicU64::new(0));
                let failed = Arc::new(AtomicU64::new(0));
                let mut tick = tokio::time::interval(Duration::from_millis(10));
                let mut n = 0;
                let mut inflight = tokio::task::JoinSet::new();
                while !s.load(Ordering::Relaxed) {
                    tick.tick().await;
                    for _ in 0..per_10ms {
                        n += 1;
                        let (c, ok, failed) = (c.clone(), Arc::clone(&ok), Arc::clone(&failed));
                        inflight.spawn(async move {
                            if place(&c, addr, n).await == Ok(200) {
                                ok.fetch_add(1, Ordering::Relaxed);
                            } else {
                                failed.fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                    while inflight.try_join_next().is_some() {}
                }
                while inflight.join_next().await.is_some() {}
                (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
            });
            Load { stop, task }
        }

        pub async fn finish(self) -> (u64, u64) {
            self.stop.store(true, Ordering::Relaxed);
            self.task.await.unwrap()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_loop_starts_a_cold_cluster_on_kubernetes_and_tells_cloudflare_the_weights() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    use tandem_control::{EdgeAdmin, Http, NodeClient};
    let dir = TempDir::new("https-run");
    let log = world::shared_log(dir.path());
    let aws_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let aws_addr = aws_listener.local_addr().unwrap();
    let _aws = world::TestNode::start(dir.path(), "aws", false, &log, aws_listener);
    // Azure's address is known to the edge from the start; its node runs
    // only once the fake API server is asked to scale.
    let azure_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let azure_addr = azure_listener.local_addr().unwrap();
    let edge = world::edge(aws_addr, azure_addr).await;
    world::first_order(edge.public).await;
    let load = world::Load::start(edge.public, 3);

    // The fake Kubernetes API: a scale to 1 starts azure's node (from the
    // test's runtime); readyReplicas is 1 once that node's /readyz is 200.
    let (scale_tx, mut scale_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let replicas = Arc::new(AtomicU32::new(0));
    let ready = Arc::new(AtomicBool::new(false));
    let (r, rd) = (Arc::clone(&replicas), Arc::clone(&ready));
    let h: Handler = Arc::new(move |s: &Seen| {
        if let Some(refused) = kube_refusal(s, Some(KUBE_TOKEN)) {
            return refused;
        }
        match (s.method.as_str(), s.path.as_str()) {
            ("PATCH", p) if p == format!("{STS_PATH}/scale") => {
                let n = s.json()["spec"]["replicas"].as_u64().unwrap_or(0) as u32;
                r.store(n, Ordering::SeqCst);
                let _ = scale_tx.send(n);
                (200, scale_answer(n))
            }
            ("GET", STS_PATH) => {
                let n = r.load(Ordering::SeqCst);
                (
                    200,
                    statefulset(n, u32::from(rd.load(Ordering::SeqCst)).min(n)),
                )
            }
            _ => not_found("the server could not find the requested resource"),
        }
    });
    let ca = Ca::new("fake kubernetes ca");
    let kube_api = Fake::start(&ca, None, h).await;
    let (dir_path, log2, rd) = (
        dir.path().to_path_buf(),
        Arc::clone(&log),
        Arc::clone(&ready),
    );
    let azure_node = tokio::spawn(async move {
        let n = scale_rx.recv().await.expect("a scale");
        assert_eq!(n, 1, "one replica per zone of the plan");
        let node = world::TestNode::start(&dir_path, "azure", true, &log2, azure_listener);
        let c = NodeClient::new(
            Http::new(Duration::from_secs(2)),
            &format!("http://{azure_addr}"),
        )
        .unwrap();
        while !matches!(c.ready().await, Ok(true)) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        rd.store(true, Ordering::SeqCst);
        node
    });

    let cf_docs = Arc::new(Mutex::new(Vec::new()));
    let cf_api = Fake::start(&ca, None, kv_api(Arc::default(), Arc::clone(&cf_docs))).await;

    let kc = kubeconfig(dir.path(), &kube_api.url(), &ca.pem, &token_user());
    let starter = KubeStarter::new(
        vec![(cluster(&kc), 1)],
        Box::new(NoOther),
        Duration::from_secs(60),
        Duration::from_millis(100),
    );
    let times = starter.times();
    let plan = two_cluster_plan(&edge.admin.to_string(), true);
    let cfg = tandem_rollout::run::RunConfig {
        plan,
        token: world::ADMIN_TOKEN.into(),
        listen: None,
        timeline: Some(dir.path().join("timeline.jsonl")),
        state: Some(dir.path().join("state.json")),
        windows: None,
        starter: Box::new(starter),
        progress: std::env::var("RUN_PROGRESS").is_ok(),
        request_timeout: Duration::from_secs(2),
        consul: None,
        cloudflare: Some(CloudflareTarget {
            kv: kv_target(),
            token: CF_TOKEN.into(),
            api: format!("{}/client/v4", cf_api.url()),
            roots: Roots::Pem(ca.pem.clone().into_bytes()),
        }),
    };
    let done = tokio::time::timeout(Duration::from_secs(90), tandem_rollout::run::run(cfg))
        .await
        .expect("the run ended in time")
        .expect("the run");
    let (ok, failed) = load.finish().await;
    assert!(done.done(), "{:?}", done.state.stage);
    assert_eq!(failed, 0, "{ok} ok");
    let _azure = azure_node.await.expect("azure's node");

    // The starter saw readiness, and the decision core recorded the cold
    // start from the edges' view.
    let t = times.lock().unwrap()["azure"].clone().expect("azure ready");
    assert!(t > Duration::ZERO);
    assert!(done.state.cold_started_ms.contains_key("azure"));
    let timeline: Vec<Value> = std::fs::read_to_string(dir.path().join("timeline.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = |act: &str| timeline.iter().position(|e| e["action"] == act);
    let start = at("start_cluster").expect("a start_cluster entry");
    let first_weight = timeline
        .iter()
        .position(|e| e["action"] == "set_weights" && e["weights"]["azure"].as_u64() > Some(0))
        .expect("azure got weight");
    assert!(start < first_weight);
    // One scale to 1, then only reads.
    let kube_seen = kube_api.seen();
    assert_eq!(kube_seen.iter().filter(|s| s.method == "PATCH").count(), 1);
    assert!(kube_seen.iter().skip(1).all(|s| s.method == "GET"));

    // Every edge carries the final weights, and the KV documents carried
    // the weights of each change, the last one the edge's.
    let admin = EdgeAdmin::new(
        Http::new(Duration::from_secs(5)),
        &format!("http://{}", edge.admin),
        world::ADMIN_TOKEN,
    )
    .unwrap();
    let on_edge: BTreeMap<String, u64> = admin
        .weights()
        .await
        .unwrap()
        .weights
        .into_iter()
        .map(|(k, v)| (k, u64::from(v)))
        .collect();
    assert_eq!(
        on_edge,
        [("aws".to_owned(), 50), ("azure".to_owned(), 50)].into()
    );
    let docs = cf_docs.lock().unwrap().clone();
    let written: Vec<BTreeMap<String, u64>> = docs.iter().map(weights_of).collect();
    let set: Vec<BTreeMap<String, u64>> = timeline
        .iter()
        .filter(|e| e["action"] == "set_weights")
        .map(|e| {
            e["weights"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
                .collect()
        })
        .collect();
    assert_eq!(written, set, "one KV write per weight change, in order");
    assert_eq!(written.last(), Some(&on_edge));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_cluster_never_ready_on_kubernetes_pauses_the_run_naming_it() {
    let _one = ONE_RUN_AT_A_TIME.lock().await;
    let dir = TempDir::new("https-run-stuck");
    let log = world::shared_log(dir.path());
    let aws_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let aws_addr = aws_listener.local_addr().unwrap();
    let _aws = world::TestNode::start(dir.path(), "aws", false, &log, aws_listener);
    // Nothing ever serves azure's address.
    let azure_addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let edge = world::edge(aws_addr, azure_addr).await;
    world::first_order(edge.public).await;
    let load = world::Load::start(edge.public, 3);
    let ca = Ca::new("fake kubernetes ca");
    let (h, replicas) = rising_statefulset(Some(0));
    let kube_api = Fake::start(&ca, None, h).await;
    let kc = kubeconfig(dir.path(), &kube_api.url(), &ca.pem, &token_user());
    let starter = KubeStarter::new(
        vec![(cluster(&kc), 1)],
        Box::new(NoOther),
        Duration::from_secs(1),
        Duration::from_millis(100),
    );
    let timeline_path = dir.path().join("timeline.jsonl");
    let cfg = tandem_rollout::run::RunConfig {
        plan: two_cluster_plan(&edge.admin.to_string(), true),
        token: world::ADMIN_TOKEN.into(),
        listen: None,
        timeline: Some(timeline_path.clone()),
        state: Some(dir.path().join("state.json")),
        windows: None,
        starter: Box::new(starter),
        progress: std::env::var("RUN_PROGRESS").is_ok(),
        request_timeout: Duration::from_secs(2),
        consul: None,
        cloudflare: None,
    };
    let run = tokio::spawn(tandem_rollout::run::run(cfg));
    // Paused, the run waits for an operator: read the timeline instead.
    let t0 = Instant::now();
    let pause = loop {
        let text = std::fs::read_to_string(&timeline_path).unwrap_or_default();
        let found = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|e| e["action"] == "pause");
        if let Some(p) = found {
            break p;
        }
        assert!(!run.is_finished(), "the run ended: {:?}", run.await);
        assert!(t0.elapsed() < Duration::from_secs(60), "no pause:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    run.abort();
    let _ = load.finish().await;
    let reason = pause["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("cannot start azure: kubernetes cluster azure (context azure-ctx")
            && reason.contains("0 of 1 replicas ready after"),
        "{reason}"
    );
    assert_eq!(replicas.load(Ordering::SeqCst), 1);
    // Azure never got weight.
    let text = std::fs::read_to_string(&timeline_path).unwrap();
    assert!(text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .all(|e| e["weights"]["azure"].as_u64().unwrap_or(0) == 0));
}
