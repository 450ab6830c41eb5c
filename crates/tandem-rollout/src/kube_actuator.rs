//! The Kubernetes actuator: the requests of `kubernetes` sent over
//! `https` with the credentials of one kubeconfig context per cluster
//! (`--kubeconfig FILE --kube CLUSTER=CONTEXT[/NAMESPACE/STATEFULSET]`).
//!
//! - [`KubeCluster`]: one cluster's StatefulSet: `scale` (the `scale`
//!   subresource, retried on 409), `state`, `wait_ready` (polls until
//!   `readyReplicas` equals the wanted count, within a deadline),
//!   `restart` (the pod-template annotation `canary.sh` patched) and
//!   `drain` (cordon, then evict every pod, retrying evictions a
//!   PodDisruptionBudget refuses with 429 until a deadline).
//! - [`KubeStarter`]: the [`ClusterStarter`] of `start: cold` clusters:
//!   in a task of its own, scales the StatefulSet from 0 to the cluster's
//!   size (one node per zone of the plan, as `deploy/kubernetes` spreads
//!   them) and polls until it is ready; the time from the scale to
//!   `readyReplicas == N`, or why it never came (a refused scale
//!   included), is reported to the run loop, which never waits on the
//!   API server. Clusters without `--kube` go to the other starter
//!   (`--start`).
//!
//! A refused credential (401) is named with the cluster and the context;
//! the token is never in an error or a log line.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::exec_credential::{ExecError, ExecSource};
use crate::https::{Https, HttpsError};
use crate::kubeconfig::{self, KubeconfigError};
use crate::kubernetes::{self, Api, KubeError, RolloutState};
use crate::run::{ClusterStarter, StartReport};

/// The namespace and StatefulSet of `deploy/kubernetes`.
pub const DEFAULT_NAMESPACE: &str = "tandem";
pub const DEFAULT_STATEFULSET: &str = "tandem-node";
/// Tries of a scale the API server answers 409 (a concurrent update).
const CONFLICT_TRIES: usize = 3;

/// `--kube CLUSTER=CONTEXT[/NAMESPACE/STATEFULSET]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeTarget {
    pub cluster: String,
    pub context: String,
    pub namespace: Option<String>,
    pub statefulset: Option<String>,
}

impl KubeTarget {
    /// Parses the flag's value.
    pub fn parse(v: &str) -> Result<KubeTarget, String> {
        let usage = || format!("{v:?} is not CLUSTER=CONTEXT[/NAMESPACE/STATEFULSET]");
        let (cluster, rest) = v.split_once('=').ok_or_else(usage)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let (context, namespace, statefulset) = match parts.as_slice() {
            [c] => (*c, None, None),
            [c, ns, sts] => (*c, Some(*ns), Some(*sts)),
            _ => return Err(usage()),
        };
        if cluster.is_empty() || context.is_empty() {
            return Err(usage());
        }
        for (field, name) in [("namespace", namespace), ("statefulset", statefulset)] {
            if let Some(n) = name {
                kubernetes::check_name(field, n).map_err(|e| format!("{v:?}: {e}"))?;
            }
        }
        Ok(KubeTarget {
            cluster: cluster.to_owned(),
            context: context.to_owned(),
            namespace: namespace.map(str::to_owned),
            statefulset: statefulset.map(str::to_owned),
        })
    }
}

/// What went wrong with one cluster's call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// 401: the context's token or client certificate was refused.
    #[error("the API server refused the credentials of the context (HTTP 401): {0}")]
    Unauthorized(String),
    #[error("{0}")]
    Kube(KubeError),
    #[error("{0}")]
    Transport(HttpsError),
    /// The context's credential plugin gave no token.
    #[error("{0}")]
    Plugin(ExecError),
    /// A restart's rolling update did not finish in time.
    #[error("the rolling update is not done after {after_ms} ms (the deadline): {ready} of {want} replicas ready, not all on the new template")]
    NotUpdated {
        ready: u32,
        want: u32,
        after_ms: u64,
    },
    /// This process could not make the runtime the calls run on.
    #[error("no runtime for the calls: {0}")]
    Runtime(String),
    /// `readyReplicas` did not reach the wanted count in time.
    #[error("{ready} of {want} replicas ready after {after_ms} ms (the deadline)")]
    NotReady {
        ready: u32,
        want: u32,
        after_ms: u64,
    },
}

impl Failure {
    /// Worth asking again (unreachable, 5xx, 429); not a refusal.
    fn transient(&self) -> bool {
        match self {
            Failure::Transport(HttpsError::Unreachable { .. }) => true,
            Failure::Kube(KubeError::Blocked(_)) => true,
            Failure::Kube(KubeError::Refused { status, .. }) => *status >= 500,
            _ => false,
        }
    }
}

/// A call to one cluster that failed, naming the cluster and context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kubernetes cluster {cluster} (context {context}, {server}): {failure}")]
pub struct ActError {
    pub cluster: String,
    pub context: String,
    pub server: String,
    pub failure: Failure,
}

/// One cluster's StatefulSet and the client for its API server.
#[derive(Debug, Clone)]
pub struct KubeCluster {
    pub cluster: String,
    pub context: String,
    pub namespace: String,
    pub statefulset: String,
    api: Api,
    https: Https,
    /// The context's credential plugin, when it has one (the token of
    /// every request comes from it).
    exec: Option<Arc<ExecSource>>,
}

impl KubeCluster {
    /// From a resolved context; namespace: the target's, else the
    /// context's, else [`DEFAULT_NAMESPACE`].
    pub fn new(
        target: &KubeTarget,
        ctx: &kubeconfig::Context,
        timeout: Duration,
    ) -> Result<KubeCluster, HttpsError> {
        let https = Https::new(&ctx.roots, ctx.client.as_ref(), &ctx.roots_field, timeout)?;
        Ok(KubeCluster {
            cluster: target.cluster.clone(),
            context: ctx.name.clone(),
            namespace: target
                .namespace
                .clone()
                .or_else(|| ctx.namespace.clone())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
            statefulset: target
                .statefulset
                .clone()
                .unwrap_or_else(|| DEFAULT_STATEFULSET.to_owned()),
            api: Api {
                server: ctx.server.clone(),
                token: ctx.token.clone().unwrap_or_default(),
            },
            https,
            exec: ctx.exec.clone().map(|p| Arc::new(ExecSource::new(p))),
        })
    }

    /// Reads the kubeconfig and the target's context: everything checked
    /// before anything is sent.
    pub fn load(
        kubeconfig: &Path,
        target: &KubeTarget,
        timeout: Duration,
    ) -> Result<KubeCluster, KubeconfigError> {
        let ctx = kubeconfig::load(kubeconfig, &target.context)?;
        if let Some(ns) = &ctx.namespace {
            kubernetes::check_name("namespace", ns).map_err(|e| KubeconfigError {
                file: kubeconfig.display().to_string(),
                field: format!("contexts[{}].context.namespace", target.context),
                message: e.to_string(),
            })?;
        }
        KubeCluster::new(target, &ctx, timeout).map_err(|e| KubeconfigError {
            file: kubeconfig.display().to_string(),
            field: match &e {
                HttpsError::Config { field, .. } => field.clone(),
                _ => ctx.roots_field.clone(),
            },
            message: match e {
                HttpsError::Config { message, .. } => message,
                other => other.to_string(),
            },
        })
    }

    pub fn server(&self) -> &str {
        &self.api.server
    }

    fn fail(&self, failure: Failure) -> ActError {
        ActError {
            cluster: self.cluster.clone(),
            context: self.context.clone(),
            server: self.api.server.clone(),
            failure,
        }
    }

    /// The credential plugin's source, when the context has one.
    pub fn exec(&self) -> Option<&ExecSource> {
        self.exec.as_deref()
    }

    /// Sends a built request; the status and body. With a credential
    /// plugin the request carries its token, and a 401 is answered by
    /// running the plugin again and sending the request once more.
    async fn send(
        &self,
        req: Result<http::Request<Vec<u8>>, KubeError>,
    ) -> Result<(u16, Bytes), Failure> {
        let req = req.map_err(Failure::Kube)?;
        let Some(exec) = &self.exec else {
            let (status, body) = self.https.send(req).await.map_err(Failure::Transport)?;
            return Ok((status.as_u16(), body));
        };
        let again = copy_request(&req);
        let token = exec.token().await.map_err(Failure::Plugin)?;
        let (status, body) = self
            .https
            .send(with_bearer(req, &token)?)
            .await
            .map_err(Failure::Transport)?;
        if status != http::StatusCode::UNAUTHORIZED {
            return Ok((status.as_u16(), body));
        }
        exec.forget(&token).await;
        let fresh = exec.token().await.map_err(Failure::Plugin)?;
        if fresh == token {
            return Ok((status.as_u16(), body));
        }
        let (status, body) = self
            .https
            .send(with_bearer(again, &fresh)?)
            .await
            .map_err(Failure::Transport)?;
        Ok((status.as_u16(), body))
    }

    /// Reads an answer: 2xx is `Ok`, 401 is `Unauthorized`, the rest as
    /// [`kubernetes::check`] reads it.
    fn read(status: u16, body: &[u8], what: &str) -> Result<(), Failure> {
        match kubernetes::check(status, body, what) {
            Ok(()) => Ok(()),
            Err(KubeError::Refused {
                status: 401,
                message,
                ..
            }) => Err(Failure::Unauthorized(message)),
            Err(e) => Err(Failure::Kube(e)),
        }
    }

    fn what(&self) -> String {
        format!("statefulset {}/{}", self.namespace, self.statefulset)
    }

    /// Sets the StatefulSet's replicas through its `scale` subresource.
    pub async fn scale(&self, replicas: u32) -> Result<(), ActError> {
        let mut last = None;
        for _ in 0..CONFLICT_TRIES {
            let req = self.api.scale(&self.namespace, &self.statefulset, replicas);
            let (status, body) = self.send(req).await.map_err(|f| self.fail(f))?;
            match Self::read(status, &body, &self.what()) {
                Ok(()) => return Ok(()),
                Err(f @ Failure::Kube(KubeError::Refused { status: 409, .. })) => last = Some(f),
                Err(f) => return Err(self.fail(f)),
            }
        }
        Err(self.fail(last.expect("at least one try")))
    }

    /// Where the StatefulSet stands.
    pub async fn state(&self) -> Result<RolloutState, ActError> {
        self.state_failure().await.map_err(|f| self.fail(f))
    }

    async fn state_failure(&self) -> Result<RolloutState, Failure> {
        let req = self.api.get_statefulset(&self.namespace, &self.statefulset);
        let (status, body) = self.send(req).await?;
        Self::read(status, &body, &self.what())?;
        kubernetes::rollout_state(status, &body).map_err(Failure::Kube)
    }

    /// Polls the StatefulSet every `every` until `spec.replicas` and
    /// `readyReplicas` both equal `want`; the time that took. Unreachable,
    /// 5xx and 429 answers are polled through; other refusals end it.
    /// After `deadline`: `NotReady` with the last count seen.
    pub async fn wait_ready(
        &self,
        want: u32,
        deadline: Duration,
        every: Duration,
    ) -> Result<Duration, ActError> {
        self.poll_until(
            deadline,
            every,
            |s| s.replicas == want && s.ready == want,
            |last, after_ms| Failure::NotReady {
                ready: last.map_or(0, |s| s.ready),
                want,
                after_ms,
            },
        )
        .await
    }

    /// Polls the StatefulSet every `every` until every wanted replica runs
    /// its newest spec and is ready ([`RolloutState::done`]), as `kubectl
    /// rollout status` waits; the time that took. Transient answers are
    /// polled through. After `deadline`: `NotUpdated` with the last counts
    /// seen.
    pub async fn wait_updated(
        &self,
        deadline: Duration,
        every: Duration,
    ) -> Result<Duration, ActError> {
        self.poll_until(deadline, every, RolloutState::done, |last, after_ms| {
            Failure::NotUpdated {
                ready: last.map_or(0, |s| s.ready),
                want: last.map_or(0, |s| s.replicas),
                after_ms,
            }
        })
        .await
    }

    /// Reads the StatefulSet every `every` until `done` holds of it (the
    /// time that took), polling through transient answers; after
    /// `deadline`, the failure `late` makes of the last state read.
    async fn poll_until(
        &self,
        deadline: Duration,
        every: Duration,
        done: impl Fn(&RolloutState) -> bool,
        late: impl Fn(Option<RolloutState>, u64) -> Failure,
    ) -> Result<Duration, ActError> {
        let t0 = tokio::time::Instant::now();
        let mut last = None;
        loop {
            match self.state_failure().await {
                Ok(s) if done(&s) => return Ok(t0.elapsed()),
                Ok(s) => last = Some(s),
                Err(f) if f.transient() => {}
                Err(f) => return Err(self.fail(f)),
            }
            let elapsed = t0.elapsed();
            if elapsed >= deadline {
                return Err(self.fail(late(last, elapsed.as_millis() as u64)));
            }
            tokio::time::sleep(every.min(deadline - elapsed)).await;
        }
    }

    /// Restarts every pod of the StatefulSet (its update strategy paces
    /// it): the pod-template annotation `kubectl.kubernetes.io/restartedAt`
    /// set to `at` (RFC 3339), as `canary.sh` did with `kubectl rollout
    /// restart`.
    pub async fn restart(&self, at: &str) -> Result<(), ActError> {
        let req = self.api.restart(&self.namespace, &self.statefulset, at);
        let (status, body) = self.send(req).await.map_err(|f| self.fail(f))?;
        Self::read(status, &body, &self.what()).map_err(|f| self.fail(f))
    }

    /// Drains machine `node`: cordons it, lists its pods (DaemonSet pods
    /// and pods already going left out) and evicts each; an eviction a
    /// PodDisruptionBudget refuses (429) is asked again every `every`
    /// until `deadline`; a pod already gone (404) counts as evicted. The
    /// number of pods evicted.
    pub async fn drain(
        &self,
        node: &str,
        deadline: Duration,
        every: Duration,
    ) -> Result<usize, ActError> {
        let t0 = tokio::time::Instant::now();
        let req = self.api.cordon(node);
        let (status, body) = self.send(req).await.map_err(|f| self.fail(f))?;
        Self::read(status, &body, &format!("node {node}")).map_err(|f| self.fail(f))?;
        let req = self.api.pods_on(node);
        let (status, body) = self.send(req).await.map_err(|f| self.fail(f))?;
        Self::read(status, &body, &format!("pods of node {node}")).map_err(|f| self.fail(f))?;
        let pods =
            kubernetes::pods_to_evict(status, &body).map_err(|e| self.fail(Failure::Kube(e)))?;
        for (ns, pod) in &pods {
            loop {
                let req = self.api.evict(ns, pod);
                let (status, body) = self.send(req).await.map_err(|f| self.fail(f))?;
                match Self::read(status, &body, &format!("pod {ns}/{pod}")) {
                    Ok(()) | Err(Failure::Kube(KubeError::NotFound(_))) => break,
                    Err(f @ Failure::Kube(KubeError::Blocked(_))) => {
                        if t0.elapsed() + every > deadline {
                            return Err(self.fail(f));
                        }
                        tokio::time::sleep(every).await;
                    }
                    Err(f) => return Err(self.fail(f)),
                }
            }
        }
        Ok(pods.len())
    }
}

/// `tandem rollout restart` on a runtime of its own: [`KubeCluster::restart`]
/// at `at` (RFC 3339), then, with `wait`, [`KubeCluster::wait_updated`]
/// polling every `every`: how long the pods took, or `None` without `wait`.
pub fn restart_blocking(
    k: &KubeCluster,
    at: &str,
    wait: Option<Duration>,
    every: Duration,
) -> Result<Option<Duration>, Box<ActError>> {
    blocking(k, async {
        k.restart(at).await?;
        match wait {
            Some(deadline) => k.wait_updated(deadline, every).await.map(Some),
            None => Ok(None),
        }
    })
}

/// `tandem rollout drain` on a runtime of its own: [`KubeCluster::drain`].
pub fn drain_blocking(
    k: &KubeCluster,
    node: &str,
    deadline: Duration,
    every: Duration,
) -> Result<usize, Box<ActError>> {
    blocking(k, k.drain(node, deadline, every))
}

fn blocking<T>(
    k: &KubeCluster,
    f: impl std::future::Future<Output = Result<T, ActError>>,
) -> Result<T, Box<ActError>> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f).map_err(Box::new),
        Err(e) => Err(Box::new(k.fail(Failure::Runtime(e.to_string())))),
    }
}

/// The same request again (a 401 is answered by sending it once more).
fn copy_request(req: &http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    let mut copy = http::Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// `req` with `Authorization: Bearer token`.
fn with_bearer(
    mut req: http::Request<Vec<u8>>,
    token: &str,
) -> Result<http::Request<Vec<u8>>, Failure> {
    let mut v = http::HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| Failure::Kube(KubeError::BadToken))?;
    v.set_sensitive(true);
    req.headers_mut().insert(http::header::AUTHORIZATION, v);
    Ok(req)
}

/// Time from the scale to every replica ready, per cluster started.
pub type ReadyTimes = Arc<Mutex<BTreeMap<String, Result<Duration, String>>>>;

/// The starter of `start: cold` clusters on Kubernetes: see the module doc.
pub struct KubeStarter {
    clusters: BTreeMap<String, (KubeCluster, u32)>,
    other: Box<dyn ClusterStarter>,
    deadline: Duration,
    every: Duration,
    reports: Arc<Mutex<Vec<StartReport>>>,
    times: ReadyTimes,
}

impl std::fmt::Debug for KubeStarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStarter")
            .field("clusters", &self.clusters.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KubeStarter {
    /// `clusters`: each cluster's StatefulSet and its size; the others
    /// are started by `other`. Readiness is polled every `every` until
    /// `deadline` after the scale.
    pub fn new(
        clusters: Vec<(KubeCluster, u32)>,
        other: Box<dyn ClusterStarter>,
        deadline: Duration,
        every: Duration,
    ) -> KubeStarter {
        KubeStarter {
            clusters: clusters
                .into_iter()
                .map(|(k, n)| (k.cluster.clone(), (k, n)))
                .collect(),
            other,
            deadline,
            every,
            reports: Arc::default(),
            times: Arc::default(),
        }
    }

    /// The time to ready of every cluster started (or why not), shared.
    pub fn times(&self) -> ReadyTimes {
        Arc::clone(&self.times)
    }
}

impl ClusterStarter for KubeStarter {
    fn start(&mut self, cluster: &str) -> Result<(), String> {
        let Some((k, want)) = self.clusters.get(cluster).cloned() else {
            return self.other.start(cluster);
        };
        let (deadline, every) = (self.deadline, self.every);
        let (reports, times) = (Arc::clone(&self.reports), Arc::clone(&self.times));
        // The scale and the polls run in a task of their own: the loop
        // goes on observing (and rolling back) meanwhile, and learns the
        // outcome from `finished`.
        let work = async move {
            let t0 = tokio::time::Instant::now();
            let r = match k.scale(want).await {
                Ok(()) => k
                    .wait_ready(want, deadline, every)
                    .await
                    .map(|_| t0.elapsed()),
                Err(e) => Err(e),
            };
            let outcome = r
                .as_ref()
                .map(|d| d.as_millis() as u64)
                .map_err(|e| e.to_string());
            times
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(k.cluster.clone(), r.map_err(|e| e.to_string()));
            reports
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(StartReport {
                    cluster: k.cluster.clone(),
                    by: format!("kubernetes context {}, replicas {want}", k.context),
                    ready_ms: outcome,
                });
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(work);
            }
            Err(_) => {
                std::thread::spawn(move || {
                    if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        rt.block_on(work);
                    }
                });
            }
        }
        Ok(())
    }

    fn finished(&mut self) -> Vec<StartReport> {
        let mut done = std::mem::take(&mut *self.reports.lock().unwrap_or_else(|p| p.into_inner()));
        done.extend(self.other.finished());
        done
    }
}
