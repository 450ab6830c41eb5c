//! Checks of `deploy/kubernetes` on the manifests as Kustomize renders them
//! (`kubectl kustomize`, offline): every object parses as its typed
//! Kubernetes object with no field the API would not know, and the
//! settings that must agree with something else do: probe paths and ports
//! with the node's and edge's real configuration (parsed by their own
//! parsers), the termination grace with the drain and the final snapshot,
//! the labels and the edge's clusters with the rollout plan
//! (`deploy/rollout/seed.yaml`), the controller's plan with the seed plan.
//! What only a real cluster shows (scheduling, volumes, load balancers,
//! the zone label on the pods) is listed in `deploy/kubernetes/README.md`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PersistentVolumeClaim, PodSpec, Probe, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tandem_deploy::{deploy, yaml_docs};
use tandem_edge::EdgeConfig;
use tandem_node::NodeConfig;

/// Overlay directory and the plan's cluster it deploys.
const OVERLAYS: [(&str, &str); 3] = [("eks", "aws"), ("gke", "gcp"), ("aks", "azure")];

/// Seconds the final snapshot may take at stop. No config key bounds it
/// (`Node::stop` waits for every replica's `snapshot_now`); the README's
/// capacity run measured 3.9-4.1 s plus 0.2 s fsync for 10 M resting
/// orders, and `snapshot_now` first waits for a background snapshot in
/// flight, so up to about twice that. 30 s leaves room for a slower disk.
const SNAPSHOT_BUDGET_SECS: u64 = 30;

/// `kubectl kustomize deploy/kubernetes/overlays/<overlay>` as JSON values.
fn render(overlay: &str) -> Vec<Value> {
    tandem_deploy::render_overlay(overlay).unwrap_or_else(|e| panic!("{e}"))
}

/// `v` as `T` and back: the differences are fields `T` does not have
/// (misspelt or misplaced keys, which the API server would reject or drop)
/// or values of the wrong type.
fn round_trip<T: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

/// Parses `obj` as the typed object its apiVersion and kind name and
/// returns the serialised typed object; an unknown kind is an error.
fn typed(obj: &Value) -> Result<Value, String> {
    let api = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    match (api, kind) {
        ("v1", "Namespace") => round_trip::<Namespace>(obj),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(obj),
        ("v1", "Service") => round_trip::<Service>(obj),
        ("v1", "PersistentVolumeClaim") => round_trip::<PersistentVolumeClaim>(obj),
        ("apps/v1", "StatefulSet") => round_trip::<StatefulSet>(obj),
        ("apps/v1", "Deployment") => round_trip::<Deployment>(obj),
        ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>(obj),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(obj),
        ("storage.k8s.io/v1", "StorageClass") => round_trip::<StorageClass>(obj),
        _ => Err(format!("unexpected kind {api}/{kind}")),
    }
}

/// The first path where `a` (rendered) and `b` (typed) differ.
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    None => return Some(format!("{path}.{k}: not a field of the typed object")),
                    Some(vb) => {
                        if let Some(d) = first_difference(&format!("{path}.{k}"), va, vb) {
                            return Some(d);
                        }
                    }
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k) && !embedded_type_meta(path, k))
                .map(|k| format!("{path}.{k}: added by the typed object"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (va, vb))| first_difference(&format!("{path}[{i}]"), va, vb)),
        _ if a == b => None,
        _ => Some(format!("{path}: rendered {a} but typed {b}")),
    }
}

/// The one thing k8s-openapi adds legitimately: a StatefulSet's
/// `volumeClaimTemplates` are typed `PersistentVolumeClaim`s, which
/// serialise their own `apiVersion` and `kind` (the API server accepts
/// both forms).
fn embedded_type_meta(path: &str, key: &str) -> bool {
    (key == "apiVersion" || key == "kind")
        && path
            .strip_prefix(".spec.volumeClaimTemplates[")
            .and_then(|rest| rest.strip_suffix(']'))
            .is_some_and(|i| i.parse::<usize>().is_ok())
}

/// The rendered objects of one overlay, typed-checked, by kind.
struct Rendered {
    overlay: &'static str,
    objects: Vec<Value>,
}

impl Rendered {
    fn new(overlay: &'static str) -> Rendered {
        Rendered {
            overlay,
            objects: render(overlay),
        }
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn one<T: DeserializeOwned>(&self, kind: &str, name: &str) -> T {
        let found: Vec<_> = self
            .all(kind)
            .into_iter()
            .filter(|o| o["metadata"]["name"] == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: expected one {kind} {name}, found {}",
            self.overlay,
            found.len()
        );
        serde_json::from_value(found[0].clone()).expect("typed object")
    }

    /// The ConfigMap a pod mounts as volume `volume`, and that volume's
    /// mount path in `container`.
    fn mounted_config(
        &self,
        pod: &PodSpec,
        container: &Container,
        volume: &str,
    ) -> (ConfigMap, String) {
        let vol = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == volume)
            .unwrap_or_else(|| panic!("{}: no volume {volume}", self.overlay));
        let cm_name = &vol
            .config_map
            .as_ref()
            .unwrap_or_else(|| panic!("{}: volume {volume} is not a ConfigMap", self.overlay))
            .name;
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume)
            .unwrap_or_else(|| panic!("{}: {volume} is not mounted", self.overlay));
        (
            self.one::<ConfigMap>("ConfigMap", cm_name),
            mount.mount_path.clone(),
        )
    }
}

fn pod_spec_of_statefulset(s: &StatefulSet) -> &PodSpec {
    s.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn pod_spec_of_deployment(d: &Deployment) -> &PodSpec {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
    pod.containers
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// The value of `--flag` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let i = args
        .iter()
        .position(|a| a == name)
        .unwrap_or_else(|| panic!("{name} missing from {args:?}"));
    args.get(i + 1)
        .unwrap_or_else(|| panic!("{name} without a value"))
}

/// The port number a probe's `port` names (a number or a container port's
/// name).
fn probe_port(c: &Container, probe: &Probe) -> i32 {
    let get = probe.http_get.as_ref().expect("an HTTP GET probe");
    match &get.port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("probe port {name} is not a port of {}", c.name))
                .container_port
        }
    }
}

fn probe_path(probe: &Option<Probe>) -> &str {
    probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .and_then(|g| g.path.as_deref())
        .unwrap_or("")
}

/// The env of `c` as name -> (literal value, or the fieldRef path / the
/// secret as `secret:NAME/KEY`).
fn env(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let v = match (&e.value, &e.value_from) {
                (Some(v), None) => v.clone(),
                (None, Some(from)) => {
                    if let Some(f) = &from.field_ref {
                        format!("field:{}", f.field_path)
                    } else if let Some(s) = &from.secret_key_ref {
                        format!("secret:{}/{}", s.name, s.key)
                    } else {
                        panic!("env {} comes from an unexpected source", e.name)
                    }
                }
                _ => panic!("env {} has no single source", e.name),
            };
            (e.name.clone(), v)
        })
        .collect()
}

/// The seed plan (`deploy/rollout/seed.yaml`) as JSON.
fn seed_plan() -> Value {
    let text = std::fs::read_to_string(deploy("rollout/seed.yaml")).expect("read seed.yaml");
    let mut docs = yaml_docs(&text).expect("seed.yaml parses");
    assert_eq!(docs.len(), 1, "seed.yaml is one document");
    docs.remove(0)
}

/// The image tag of the overlay's tandem containers (all equal).
fn tandem_image(r: &Rendered) -> String {
    let mut images: Vec<String> = Vec::new();
    for kind in ["StatefulSet", "Deployment", "DaemonSet"] {
        for o in r.all(kind) {
            let spec = &o["spec"]["template"]["spec"];
            for list in ["initContainers", "containers"] {
                for c in spec[list].as_array().into_iter().flatten() {
                    let image = c["image"].as_str().expect("image").to_string();
                    if !image.starts_with("registry.k8s.io/pause:") {
                        images.push(image);
                    }
                }
            }
        }
    }
    images.sort();
    images.dedup();
    assert_eq!(
        images.len(),
        1,
        "{}: one tandem image, found {images:?}",
        r.overlay
    );
    images.remove(0)
}

#[test]
fn every_overlay_renders_typed_objects_without_unknown_fields() {
    for (overlay, _) in OVERLAYS {
        let r = Rendered::new(overlay);
        for obj in &r.objects {
            let what = format!(
                "{overlay}: {} {}",
                obj["kind"].as_str().unwrap_or("?"),
                obj["metadata"]["name"].as_str().unwrap_or("?")
            );
            let back = typed(obj).unwrap_or_else(|e| panic!("{what}: {e}"));
            if let Some(d) = first_difference("", obj, &back) {
                panic!("{what}: {d}");
            }
        }
        // What every cluster runs, and the controller on EKS only.
        let mut names: Vec<String> = r
            .objects
            .iter()
            .filter(|o| o["kind"] != "ConfigMap")
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        names.sort();
        let mut want = vec![
            "DaemonSet/tandem-warmup",
            "Deployment/tandem-edge",
            "Namespace/tandem",
            "PodDisruptionBudget/tandem-node",
            "Service/tandem-edge",
            "Service/tandem-edge-admin",
            "Service/tandem-node",
            "Service/tandem-node-headless",
            "Service/tandem-node-internal",
            "StatefulSet/tandem-node",
            "StorageClass/tandem-data",
        ];
        if overlay == "eks" {
            want.extend([
                "Deployment/tandem-controller",
                "PersistentVolumeClaim/tandem-controller-state",
                "Service/tandem-controller",
            ]);
        }
        want.sort();
        assert_eq!(names, want, "{overlay}: objects rendered");
        // Everything namespaced is in the tandem namespace.
        for o in &r.objects {
            let kind = o["kind"].as_str().unwrap();
            if kind != "Namespace" && kind != "StorageClass" {
                assert_eq!(
                    o["metadata"]["namespace"], "tandem",
                    "{overlay}: {kind} namespace"
                );
            }
        }
    }
}

#[test]
fn node_probes_grace_and_config_agree_with_the_node() {
    let plan = seed_plan();
    for (overlay, cluster) in OVERLAYS {
        let r = Rendered::new(overlay);
        let sts: StatefulSet = r.one("StatefulSet", "tandem-node");
        let pod = pod_spec_of_statefulset(&sts);
        let c = container(pod, "node");
        let args = c.args.clone().unwrap_or_default();
        assert_eq!(args[0], "node", "{overlay}: the node's subcommand");

        // The config file the args name is the mounted ConfigMap's key,
        // and the node's own parser accepts it with the pod's env.
        let (cm, mount) = r.mounted_config(pod, c, "config");
        let path = flag(&args, "--config");
        let key = path
            .strip_prefix(&format!("{mount}/"))
            .unwrap_or_else(|| panic!("{overlay}: --config {path} is not under {mount}"));
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .expect("node config in the ConfigMap");
        let mut cfg =
            NodeConfig::parse(text).unwrap_or_else(|e| panic!("{overlay}: node config: {e}"));
        let env = env(c);
        assert_eq!(
            env["TANDEM_NODE"], "field:metadata.name",
            "{overlay}: TANDEM_NODE"
        );
        assert_eq!(
            env["TANDEM_ZONE"], "field:metadata.labels['topology.kubernetes.io/zone']",
            "{overlay}: TANDEM_ZONE"
        );
        let zones = zone_values(&sts);
        let pod_env = BTreeMap::from([
            ("TANDEM_NODE".to_string(), "tandem-node-0".to_string()),
            ("TANDEM_ZONE".to_string(), zones[0].clone()),
        ]);
        cfg.apply_env(&pod_env).expect("env applies");
        cfg.check()
            .unwrap_or_else(|e| panic!("{overlay}: node config: {e}"));
        assert!(
            cfg.listen.ip().is_unspecified(),
            "{overlay}: the node must listen on all addresses, not {}",
            cfg.listen
        );
        assert_eq!(
            cfg.log.kind,
            tandem_node::config::LogKind::Kafka,
            "{overlay}: the clouds share one Kafka log"
        );

        // Probes on the node's listener.
        assert_eq!(
            probe_path(&c.readiness_probe),
            "/readyz",
            "{overlay}: readiness path"
        );
        assert_eq!(
            probe_path(&c.liveness_probe),
            "/healthz",
            "{overlay}: liveness path"
        );
        assert_eq!(
            probe_path(&c.startup_probe),
            "/healthz",
            "{overlay}: startup path"
        );
        for p in [&c.readiness_probe, &c.liveness_probe, &c.startup_probe] {
            let port = probe_port(c, p.as_ref().unwrap());
            assert_eq!(
                port,
                i32::from(cfg.listen.port()),
                "{overlay}: probe port vs listen {}",
                cfg.listen
            );
        }

        // Grace: preStop, then the drain, then the final snapshot.
        let pre_stop = c
            .lifecycle
            .as_ref()
            .and_then(|l| l.pre_stop.as_ref())
            .and_then(|h| h.sleep.as_ref())
            .map(|s| u64::try_from(s.seconds).unwrap())
            .expect("a preStop sleep");
        let needed = pre_stop
            + cfg.http.drain_grace_ms.div_ceil(1000)
            + cfg.http.drain_timeout_secs
            + SNAPSHOT_BUDGET_SECS;
        let grace = u64::try_from(
            pod.termination_grace_period_seconds
                .expect("a grace period"),
        )
        .unwrap();
        assert!(
            grace > needed,
            "{overlay}: terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} s + \
             drain_grace {} ms + drain_timeout {} s + snapshot {SNAPSHOT_BUDGET_SECS} s",
            cfg.http.drain_grace_ms,
            cfg.http.drain_timeout_secs
        );

        // The data directory is on the claim template's volume.
        let spec = sts.spec.as_ref().unwrap();
        let claim = &spec
            .volume_claim_templates
            .as_ref()
            .expect("a claim template")[0];
        let claim_name = claim.metadata.name.as_deref().unwrap();
        let data_mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == claim_name)
            .expect("the claim is mounted");
        assert!(
            cfg.data_dir.starts_with(&data_mount.mount_path),
            "{overlay}: data_dir {} is not on the volume at {}",
            cfg.data_dir.display(),
            data_mount.mount_path
        );
        // The claim template cannot change once the StatefulSet exists: no
        // label that a promotion changes (the role) may be on it.
        let claim_labels = claim.metadata.labels.clone().unwrap_or_default();
        assert!(
            !claim_labels.contains_key("tandem/role"),
            "{overlay}: the role label on volumeClaimTemplates makes a promotion unappliable"
        );
        let class = claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref())
            .unwrap();
        let sc: StorageClass = r.one("StorageClass", class);
        assert_eq!(
            sc.volume_binding_mode.as_deref(),
            Some("WaitForFirstConsumer"),
            "{overlay}: a volume must be created in the zone its pod was scheduled to"
        );

        // Labels: the plan's cluster and role, on the objects, the pods and
        // in the node's own config.
        let want_role = plan["clusters"][cluster]["version"]
            .as_str()
            .expect("plan version");
        assert_eq!(cfg.cluster, cluster, "{overlay}: node config cluster");
        assert_eq!(cfg.role.as_str(), want_role, "{overlay}: node config role");
        let pod_labels = sts
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        for labels in [sts.metadata.labels.clone().unwrap(), pod_labels.clone()] {
            assert_eq!(
                labels.get("tandem/cluster").map(String::as_str),
                Some(cluster),
                "{overlay}: cluster label"
            );
            assert_eq!(
                labels.get("tandem/role").map(String::as_str),
                Some(want_role),
                "{overlay}: role label"
            );
        }
        for o in &r.objects {
            let labels = &o["metadata"]["labels"];
            assert_eq!(
                labels["tandem/cluster"], cluster,
                "{overlay}: {} label",
                o["metadata"]["name"]
            );
            assert_eq!(
                labels["tandem/role"], want_role,
                "{overlay}: {} label",
                o["metadata"]["name"]
            );
        }

        // One node per zone of the plan's cluster.
        let plan_zones = plan["clusters"][cluster]["zones"]
            .as_array()
            .expect("plan zones");
        assert_eq!(
            zones.len(),
            plan_zones.len(),
            "{overlay}: zones vs the plan's {plan_zones:?}"
        );
        let mut distinct = zones.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), zones.len(), "{overlay}: zones repeat");
        assert_eq!(
            spec.replicas,
            Some(i32::try_from(zones.len()).unwrap()),
            "{overlay}: one node per zone"
        );

        // Spread: at most one node more in any zone, never scheduled
        // otherwise; never two nodes on one machine.
        let selector = spec.selector.match_labels.clone().expect("selector labels");
        for (k, v) in &selector {
            assert_eq!(
                pod_labels.get(k),
                Some(v),
                "{overlay}: the selector matches the pods"
            );
        }
        let spread = pod
            .topology_spread_constraints
            .as_ref()
            .expect("topology spread");
        assert!(
            spread
                .iter()
                .any(|t| t.topology_key == "topology.kubernetes.io/zone"
                    && t.max_skew == 1
                    && t.when_unsatisfiable == "DoNotSchedule"
                    && t.label_selector
                        .as_ref()
                        .and_then(|s| s.match_labels.as_ref())
                        == Some(&selector)),
            "{overlay}: zone spread with maxSkew 1, DoNotSchedule, on the node pods"
        );
        let anti = pod
            .affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("required pod anti-affinity");
        assert!(
            anti.iter()
                .any(|t| t.topology_key == "kubernetes.io/hostname"
                    && t.label_selector
                        .as_ref()
                        .and_then(|s| s.match_labels.as_ref())
                        == Some(&selector)),
            "{overlay}: anti-affinity on the hostname over the node pods"
        );

        // Disruptions: one node at a time.
        let pdb: PodDisruptionBudget = r.one("PodDisruptionBudget", "tandem-node");
        let pdb_spec = pdb.spec.unwrap();
        assert_eq!(
            pdb_spec.max_unavailable,
            Some(IntOrString::Int(1)),
            "{overlay}: PDB"
        );
        assert_eq!(
            pdb_spec.selector.and_then(|s| s.match_labels),
            Some(selector.clone()),
            "{overlay}: PDB selector"
        );

        // The headless Service gives the per-pod names the edge lists, on
        // the node's port.
        let headless: Service = r.one("Service", "tandem-node-headless");
        let hs = headless.spec.unwrap();
        assert_eq!(
            hs.cluster_ip.as_deref(),
            Some("None"),
            "{overlay}: headless"
        );
        assert_eq!(
            spec.service_name.as_deref(),
            Some("tandem-node-headless"),
            "{overlay}: serviceName"
        );
        assert_eq!(
            hs.selector,
            Some(selector.clone()),
            "{overlay}: headless selector"
        );
        for name in [
            "tandem-node-headless",
            "tandem-node",
            "tandem-node-internal",
        ] {
            let svc: Service = r.one("Service", name);
            let s = svc.spec.unwrap();
            assert_eq!(
                s.selector,
                Some(selector.clone()),
                "{overlay}: {name} selector"
            );
            let ports = s.ports.unwrap();
            assert_eq!(ports.len(), 1);
            assert_eq!(
                ports[0].port,
                i32::from(cfg.listen.port()),
                "{overlay}: {name} port"
            );
            assert_eq!(
                ports[0].target_port,
                Some(IntOrString::String("http".into()))
            );
        }
    }
}

/// The zones the node StatefulSet is restricted to (its node affinity).
fn zone_values(sts: &StatefulSet) -> Vec<String> {
    let terms = &pod_spec_of_statefulset(sts)
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .expect("a required node affinity on the zones")
        .node_selector_terms;
    assert_eq!(terms.len(), 1);
    let exprs = terms[0]
        .match_expressions
        .as_ref()
        .expect("match expressions");
    let e = exprs
        .iter()
        .find(|e| e.key == "topology.kubernetes.io/zone" && e.operator == "In")
        .expect("zone In [...]");
    e.values.clone().unwrap_or_default()
}

#[test]
fn edge_config_probes_and_token_agree_with_the_edge_and_the_plan() {
    let plan = seed_plan();
    let first_phase = &plan["phases"][0]["weights"];
    for (overlay, cluster) in OVERLAYS {
        let r = Rendered::new(overlay);
        let d: Deployment = r.one("Deployment", "tandem-edge");
        let pod = pod_spec_of_deployment(&d);
        let c = container(pod, "edge");
        let args = c.args.clone().unwrap_or_default();
        assert_eq!(args[0], "edge", "{overlay}: the edge's subcommand");
        let (cm, mount) = r.mounted_config(pod, c, "config");
        let path = flag(&args, "--config");
        let key = path
            .strip_prefix(&format!("{mount}/"))
            .expect("--config under the mount");
        let text = cm
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .expect("edge config in the ConfigMap");
        let cfg = EdgeConfig::parse(text).unwrap_or_else(|e| panic!("{overlay}: edge config: {e}"));
        cfg.check()
            .unwrap_or_else(|e| panic!("{overlay}: edge config: {e}"));

        // The token: not in the file, from a Secret, never a literal.
        assert_eq!(cfg.admin_token, "", "{overlay}: a token in the ConfigMap");
        assert_eq!(
            env(c)
                .get(tandem_edge::config::ADMIN_TOKEN_ENV)
                .map(String::as_str),
            Some("secret:tandem-edge-admin/token"),
            "{overlay}: the admin token comes from the Secret"
        );

        // Probes on the admin listener's /healthz; the ports the container
        // declares are the edge's listeners.
        for p in [&c.readiness_probe, &c.liveness_probe] {
            assert_eq!(probe_path(p), "/healthz", "{overlay}: edge probe path");
            assert_eq!(
                probe_port(c, p.as_ref().unwrap()),
                i32::from(cfg.admin_listen.port()),
                "{overlay}: edge probe port"
            );
        }
        let port_of = |name: &str| {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .map(|p| p.container_port)
        };
        assert_eq!(
            port_of("http"),
            Some(i32::from(cfg.listen.port())),
            "{overlay}: public port"
        );
        assert_eq!(
            port_of("admin"),
            Some(i32::from(cfg.admin_listen.port())),
            "{overlay}: admin port"
        );
        assert!(cfg.listen.ip().is_unspecified() && cfg.admin_listen.ip().is_unspecified());
        let grace = u64::try_from(pod.termination_grace_period_seconds.unwrap()).unwrap();
        assert!(
            grace > cfg.drain_timeout_secs + 5,
            "{overlay}: edge grace {grace} vs drain {}",
            cfg.drain_timeout_secs
        );

        // Clusters: the plan's, at the first phase's weights; roles are the
        // plan's versions; this cluster's version is the image tag and its
        // nodes are the StatefulSet's pods on the node's port.
        let mut names: Vec<&str> = cfg.clusters.iter().map(|c| c.name.as_str()).collect();
        names.sort_unstable();
        let plan_names: Vec<&str> = plan["clusters"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(names, plan_names, "{overlay}: edge clusters vs plan");
        for cl in &cfg.clusters {
            assert_eq!(
                cl.role.as_str(),
                plan["clusters"][&cl.name]["version"],
                "{overlay}: {} role",
                cl.name
            );
            assert_eq!(
                Value::from(cl.weight),
                first_phase[&cl.name],
                "{overlay}: {} weight",
                cl.name
            );
        }
        let own = cfg.clusters.iter().find(|c| c.name == cluster).unwrap();
        let image = tandem_image(&r);
        assert_eq!(
            image.rsplit_once(':').map(|(_, t)| t),
            Some(own.version.as_str()),
            "{overlay}: image tag vs edge's {cluster} version"
        );
        let node_cfg_text = {
            let sts: StatefulSet = r.one("StatefulSet", "tandem-node");
            let pod = pod_spec_of_statefulset(&sts);
            let (cm, _) = r.mounted_config(pod, container(pod, "node"), "config");
            cm.data.unwrap().into_values().next().unwrap()
        };
        let node_port = NodeConfig::parse(&node_cfg_text).unwrap().listen.port();
        let want: Vec<String> = (0..3)
            .map(|i| {
                format!("tandem-node-{i}.tandem-node-headless.tandem.svc.cluster.local:{node_port}")
            })
            .collect();
        let got: Vec<String> = own.nodes.iter().map(|n| n.addr.clone()).collect();
        assert_eq!(got, want, "{overlay}: the edge's own nodes");
        // The other clouds' versions and addresses are checked against
        // their overlays in `the_three_clouds_agree_with_each_other`.
        for other in &cfg.clusters {
            assert!(
                !other.nodes.is_empty(),
                "{overlay}: {} has no node",
                other.name
            );
        }

        // Services: public on the public port, admin on the admin port.
        for (svc, port) in [("tandem-edge", "http"), ("tandem-edge-admin", "admin")] {
            let s: Service = r.one("Service", svc);
            let ports = s.spec.unwrap().ports.unwrap();
            assert_eq!(
                ports[0].target_port,
                Some(IntOrString::String(port.into())),
                "{overlay}: {svc}"
            );
        }
    }
}

#[test]
fn every_container_runs_as_non_root_without_privileges() {
    for (overlay, _) in OVERLAYS {
        let r = Rendered::new(overlay);
        for kind in ["StatefulSet", "Deployment", "DaemonSet"] {
            for o in r.all(kind) {
                let name = o["metadata"]["name"].as_str().unwrap();
                let spec = &o["spec"]["template"]["spec"];
                assert_eq!(
                    spec["securityContext"]["runAsNonRoot"], true,
                    "{overlay}: {name} runAsNonRoot"
                );
                assert!(
                    spec["securityContext"]["runAsUser"].as_i64().unwrap_or(0) > 0,
                    "{overlay}: {name} runAsUser"
                );
                assert_eq!(
                    spec["securityContext"]["seccompProfile"]["type"],
                    "RuntimeDefault"
                );
                assert_eq!(
                    spec["automountServiceAccountToken"], false,
                    "{overlay}: {name} needs no API token"
                );
                for list in ["initContainers", "containers"] {
                    for c in spec[list].as_array().into_iter().flatten() {
                        let sc = &c["securityContext"];
                        let what = format!("{overlay}: {name}/{}", c["name"]);
                        assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
                        assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
                        assert_eq!(
                            sc["capabilities"]["drop"],
                            serde_json::json!(["ALL"]),
                            "{what}"
                        );
                        assert!(c["resources"]["requests"].is_object(), "{what}: requests");
                        assert!(
                            c["resources"]["limits"]["memory"].is_string(),
                            "{what}: memory limit"
                        );
                        for e in c["env"].as_array().into_iter().flatten() {
                            let n = e["name"].as_str().unwrap().to_ascii_lowercase();
                            if n.contains("token") || n.contains("secret") || n.contains("password")
                            {
                                assert!(e.get("value").is_none(), "{what}: {n} is a literal");
                            }
                        }
                    }
                }
            }
        }
        assert!(
            r.all("Secret").is_empty(),
            "{overlay}: a Secret in the manifests"
        );
    }
}

#[test]
fn warmup_daemonset_runs_the_tandem_image_then_pauses() {
    for (overlay, _) in OVERLAYS {
        let r = Rendered::new(overlay);
        let ds: DaemonSet = r.one("DaemonSet", "tandem-warmup");
        let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        let init = pod.init_containers.as_ref().expect("an init container");
        assert_eq!(init.len(), 1);
        assert_eq!(
            init[0].image.as_deref(),
            Some(tandem_image(&r).as_str()),
            "{overlay}: pre-pulls the nodes' image"
        );
        assert_eq!(
            init[0].args.as_deref(),
            Some(&["--version".to_string()][..]),
            "{overlay}: a command that exits 0"
        );
        assert!(
            init[0].command.is_none(),
            "{overlay}: the image's entrypoint runs"
        );
        assert_eq!(pod.containers.len(), 1);
        assert!(
            pod.containers[0]
                .image
                .as_deref()
                .unwrap_or("")
                .starts_with("registry.k8s.io/pause:"),
            "{overlay}: then a pause container"
        );
    }
}

#[test]
fn the_controller_runs_the_seed_plan_with_a_resumable_state_on_eks_only() {
    let seed = seed_plan();
    for (overlay, _) in OVERLAYS {
        let r = Rendered::new(overlay);
        let controllers = r
            .all("Deployment")
            .into_iter()
            .filter(|o| o["metadata"]["name"] == "tandem-controller")
            .count();
        assert_eq!(
            controllers,
            usize::from(overlay == "eks"),
            "{overlay}: one controller for all clouds, on EKS"
        );
    }
    let r = Rendered::new("eks");
    let d: Deployment = r.one("Deployment", "tandem-controller");
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(1), "one controller");
    assert_eq!(
        spec.strategy.as_ref().and_then(|s| s.type_.as_deref()),
        Some("Recreate"),
        "never two controllers"
    );
    let pod = pod_spec_of_deployment(&d);
    let c = container(pod, "controller");
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(
        &args[..2],
        ["rollout", "run"],
        "the controller's subcommand"
    );
    assert_eq!(
        env(c).get("TANDEM_EDGE_ADMIN_TOKEN").map(String::as_str),
        Some("secret:tandem-edge-admin/token")
    );

    // The state file is on the claim, so a new pod resumes.
    let state = flag(&args, "--state");
    let vol = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.persistent_volume_claim.is_some())
        .expect("a claim volume");
    let claim = &vol.persistent_volume_claim.as_ref().unwrap().claim_name;
    let _: PersistentVolumeClaim = r.one("PersistentVolumeClaim", claim);
    let mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == vol.name)
        .expect("claim mounted");
    assert!(
        state.starts_with(&format!("{}/", mount.mount_path)),
        "--state {state} is not on the volume"
    );
    assert!(flag(&args, "--timeline").starts_with(&format!("{}/", mount.mount_path)));
    let listen: std::net::SocketAddr = flag(&args, "--listen").parse().expect("--listen address");
    let probe = c.readiness_probe.as_ref().unwrap();
    assert_eq!(
        probe_port(c, probe),
        i32::from(listen.port()),
        "controller probe port"
    );
    assert_eq!(probe_path(&c.readiness_probe), "/status");

    // The plan: the seed's release, clusters (azure running, not cold:
    // the image has no shell for --start), gates, phases, on_failure; the
    // edges are the three clouds' admin addresses.
    let (cm, mount) = r.mounted_config(pod, c, "plan");
    let key = flag(&args, "--plan")
        .strip_prefix(&format!("{mount}/"))
        .expect("--plan under the mount");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .expect("plan in the ConfigMap");
    let mut plan = yaml_docs(text).expect("plan parses").remove(0);
    let mut seed = seed.clone();
    assert_eq!(seed["clusters"]["azure"]["start"], "cold");
    seed["clusters"]["azure"]
        .as_object_mut()
        .unwrap()
        .remove("start");
    let edges = plan
        .as_object_mut()
        .unwrap()
        .remove("edges")
        .expect("edges");
    seed.as_object_mut().unwrap().remove("edges");
    assert_eq!(
        plan, seed,
        "the controller's plan differs from deploy/rollout/seed.yaml"
    );
    let edges: Vec<&str> = edges
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(edges.len(), OVERLAYS.len(), "one edge per cloud: {edges:?}");
    let admin: Service = r.one("Service", "tandem-edge-admin");
    let admin_port = admin.spec.unwrap().ports.unwrap()[0].port;
    assert_eq!(
        edges[0],
        format!("http://tandem-edge-admin.tandem.svc.cluster.local:{admin_port}"),
        "EKS's own edge"
    );
}

/// The node config of an overlay (the ConfigMap the StatefulSet mounts).
fn node_config(r: &Rendered) -> NodeConfig {
    let sts: StatefulSet = r.one("StatefulSet", "tandem-node");
    let pod = pod_spec_of_statefulset(&sts);
    let (cm, _) = r.mounted_config(pod, container(pod, "node"), "config");
    let text = cm.data.unwrap().into_values().next().unwrap();
    NodeConfig::parse(&text).unwrap_or_else(|e| panic!("{}: node config: {e}", r.overlay))
}

fn edge_config(r: &Rendered) -> EdgeConfig {
    let d: Deployment = r.one("Deployment", "tandem-edge");
    let pod = pod_spec_of_deployment(&d);
    let (cm, _) = r.mounted_config(pod, container(pod, "edge"), "config");
    let text = cm.data.unwrap().into_values().next().unwrap();
    EdgeConfig::parse(&text).unwrap_or_else(|e| panic!("{}: edge config: {e}", r.overlay))
}

fn service_port(r: &Rendered, name: &str) -> i32 {
    let s: Service = r.one("Service", name);
    s.spec.unwrap().ports.unwrap()[0].port
}

#[test]
fn the_three_clouds_agree_with_each_other() {
    let rendered: Vec<(&str, Rendered)> = OVERLAYS
        .iter()
        .map(|(o, c)| (*c, Rendered::new(o)))
        .collect();
    let nodes: Vec<(&str, NodeConfig)> =
        rendered.iter().map(|(c, r)| (*c, node_config(r))).collect();

    // Every node reads the same log, and the rules of the state machine
    // are equal on all of them (else their books diverge).
    let (first_cluster, first) = &nodes[0];
    for (cluster, n) in &nodes[1..] {
        let what = format!("{cluster} vs {first_cluster}");
        assert_eq!(n.log.kind, first.log.kind, "{what}: log kind");
        assert_eq!(
            n.log.kafka_brokers, first.log.kafka_brokers,
            "{what}: brokers"
        );
        assert_eq!(n.log.kafka_topic, first.log.kafka_topic, "{what}: topic");
        assert_eq!(
            n.log.kafka_partitions, first.log.kafka_partitions,
            "{what}: partitions"
        );
        assert_eq!(
            n.limits.max_markets, first.limits.max_markets,
            "{what}: max_markets"
        );
        assert_eq!(
            n.limits.max_live_orders, first.limits.max_live_orders,
            "{what}: max_live_orders"
        );
        assert_eq!(
            n.limits.max_open_orders_per_account, first.limits.max_open_orders_per_account,
            "{what}: max_open_orders_per_account"
        );
        assert_eq!(
            n.limits.checkpoint_every, first.limits.checkpoint_every,
            "{what}: checkpoint_every"
        );
    }

    // Every edge routes to the same clusters at the same versions: each
    // cluster's version is its own overlay's image tag, and another
    // cloud's nodes are its internal load balancer on its node port.
    for (cluster, r) in &rendered {
        let edge = edge_config(r);
        for cl in &edge.clusters {
            let (_, other) = rendered
                .iter()
                .find(|(c, _)| *c == cl.name)
                .expect("a cluster of the plan");
            let tag = tandem_image(other).rsplit_once(':').unwrap().1.to_string();
            assert_eq!(
                cl.version, tag,
                "{cluster}'s edge: {} version vs its image tag",
                cl.name
            );
            if cl.name != *cluster {
                let port = service_port(other, "tandem-node-internal");
                let addrs: Vec<&str> = cl.nodes.iter().map(|n| n.addr.as_str()).collect();
                assert_eq!(
                    addrs,
                    [format!("nodes.{}.tandem.internal:{port}", cl.name)],
                    "{cluster}'s edge: {}'s nodes",
                    cl.name
                );
            }
        }
    }

    // The controller (on EKS) lists every cloud's edge admin API: its own
    // by the Service, the others by their internal load balancers.
    let (_, eks) = &rendered[0];
    let plan_cm = eks
        .all("ConfigMap")
        .into_iter()
        .find(|o| {
            o["metadata"]["name"]
                .as_str()
                .unwrap()
                .starts_with("tandem-rollout-plan")
        })
        .expect("the plan's ConfigMap");
    let plan = yaml_docs(plan_cm["data"]["plan.yaml"].as_str().unwrap())
        .unwrap()
        .remove(0);
    let edges: Vec<String> = plan["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    let mut want = Vec::new();
    for (cluster, r) in &rendered {
        let port = service_port(r, "tandem-edge-admin");
        let admin = edge_config(r).admin_listen.port();
        assert_eq!(
            port,
            i32::from(admin),
            "{cluster}: admin Service port vs admin_listen"
        );
        want.push(if *cluster == "aws" {
            format!("http://tandem-edge-admin.tandem.svc.cluster.local:{port}")
        } else {
            format!("http://edge-admin.{cluster}.tandem.internal:{port}")
        });
    }
    assert_eq!(edges, want, "the controller's edges");
}
