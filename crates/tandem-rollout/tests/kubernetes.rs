//! The Kubernetes layer against the API reference's shapes (no API
//! server runs on the build machines): each request's method, path,
//! content type and body, and recorded answers read as they mean.

use serde_json::{json, Value};
use tandem_rollout::kubernetes::{self, Api, KubeError, RolloutState};

fn api() -> Api {
    Api {
        server: "https://10.0.0.1:6443".into(),
        token: "tok".into(),
    }
}

fn body(r: &http::Request<Vec<u8>>) -> Value {
    serde_json::from_slice(r.body()).expect("json body")
}

#[test]
fn restart_patches_the_pod_template_annotation() {
    let r = api()
        .restart("tandem", "node-gcp", "2026-12-05T06:00:00Z")
        .unwrap();
    assert_eq!(r.method(), http::Method::PATCH);
    assert_eq!(
        r.uri().to_string(),
        "https://10.0.0.1:6443/apis/apps/v1/namespaces/tandem/statefulsets/node-gcp"
    );
    assert_eq!(
        r.headers()["content-type"],
        "application/strategic-merge-patch+json"
    );
    assert_eq!(r.headers()["authorization"], "Bearer tok");
    assert_eq!(
        body(&r),
        json!({"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-12-05T06:00:00Z"}}}}})
    );
}

#[test]
fn scale_cordon_list_and_evict_are_the_reference_calls() {
    let s = api().scale("tandem", "node-azure", 3).unwrap();
    assert_eq!(
        s.uri().path(),
        "/apis/apps/v1/namespaces/tandem/statefulsets/node-azure/scale"
    );
    assert_eq!(s.headers()["content-type"], "application/merge-patch+json");
    assert_eq!(body(&s), json!({"spec":{"replicas":3}}));
    let c = api().cordon("aks-pool-1").unwrap();
    assert_eq!(c.uri().path(), "/api/v1/nodes/aks-pool-1");
    assert_eq!(body(&c), json!({"spec":{"unschedulable":true}}));
    let l = api().pods_on("aks-pool-1").unwrap();
    assert_eq!(
        l.uri().query(),
        Some("fieldSelector=spec.nodeName%3Daks-pool-1")
    );
    let e = api().evict("tandem", "node-azure-0").unwrap();
    assert_eq!(e.method(), http::Method::POST);
    assert_eq!(
        e.uri().path(),
        "/api/v1/namespaces/tandem/pods/node-azure-0/eviction"
    );
    assert_eq!(
        body(&e),
        json!({"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"node-azure-0","namespace":"tandem"}})
    );
}

#[test]
fn names_and_urls_are_checked_before_any_request() {
    for bad in ["", "Node", "a/b", "-a", "a_b", "a..b"] {
        assert!(
            matches!(
                api().evict("tandem", bad),
                Err(KubeError::BadName { field: "pod", .. })
            ),
            "{bad:?}"
        );
    }
    for server in [
        "http://10.0.0.1",
        "https://",
        "https://h/x",
        "10.0.0.1:6443",
    ] {
        let a = Api {
            server: server.into(),
            token: "t".into(),
        };
        assert!(
            matches!(a.cordon("n"), Err(KubeError::BadUrl(_))),
            "{server}"
        );
    }
}

#[test]
fn a_statefulset_is_done_when_every_pod_is_ready_on_the_newest_spec() {
    // Recorded shapes: scaling up from 0, then rolled out.
    let scaling = br#"{"kind":"StatefulSet","metadata":{"name":"node-azure","generation":4},
        "spec":{"replicas":3},
        "status":{"observedGeneration":4,"replicas":3,"readyReplicas":1,"updatedReplicas":3,
                  "currentRevision":"node-azure-7d9","updateRevision":"node-azure-7d9"}}"#;
    let s = kubernetes::rollout_state(200, scaling).unwrap();
    assert_eq!(
        s,
        RolloutState {
            replicas: 3,
            ready: 1,
            updated: true
        }
    );
    assert!(!s.done());
    let done = br#"{"metadata":{"generation":4},"spec":{"replicas":3},
        "status":{"observedGeneration":4,"readyReplicas":3,"updatedReplicas":3,
                  "currentRevision":"r2","updateRevision":"r2"}}"#;
    assert!(kubernetes::rollout_state(200, done).unwrap().done());
    let old_spec = br#"{"metadata":{"generation":5},"spec":{"replicas":3},
        "status":{"observedGeneration":4,"readyReplicas":3,"updatedReplicas":3}}"#;
    assert!(!kubernetes::rollout_state(200, old_spec).unwrap().done());
    let scaled_to_zero = br#"{"metadata":{"generation":1},"spec":{"replicas":0},"status":{}}"#;
    assert!(!kubernetes::rollout_state(200, scaled_to_zero)
        .unwrap()
        .done());
}

#[test]
fn answers_that_refuse_are_errors_that_say_why() {
    let not_found = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"statefulsets.apps \"x\" not found","reason":"NotFound","code":404}"#;
    assert_eq!(
        kubernetes::rollout_state(404, not_found),
        Err(KubeError::NotFound("statefulset".into()))
    );
    let pdb = br#"{"kind":"Status","status":"Failure","message":"Cannot evict pod as it would violate the pod's disruption budget.","reason":"TooManyRequests","code":429}"#;
    assert_eq!(
        kubernetes::check(429, pdb, "tandem/node-azure-0"),
        Err(KubeError::Blocked("tandem/node-azure-0".into()))
    );
    let forbidden = br#"{"kind":"Status","status":"Failure","message":"nodes \"n\" is forbidden","reason":"Forbidden","code":403}"#;
    match kubernetes::check(403, forbidden, "node n") {
        Err(KubeError::Refused { status, reason, .. }) => {
            assert_eq!((status, reason.as_str()), (403, "Forbidden"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_drain_evicts_all_but_daemonset_pods() {
    let list = br#"{"kind":"PodList","items":[
        {"metadata":{"name":"node-azure-0","namespace":"tandem",
                     "ownerReferences":[{"kind":"StatefulSet","name":"node-azure"}]}},
        {"metadata":{"name":"warmup-x1","namespace":"tandem",
                     "ownerReferences":[{"kind":"DaemonSet","name":"warmup"}]}},
        {"metadata":{"name":"old","namespace":"tandem","deletionTimestamp":"2026-12-05T06:00:00Z"}},
        {"metadata":{"name":"edge-5c","namespace":"edge"}}
    ]}"#;
    assert_eq!(
        kubernetes::pods_to_evict(200, list).unwrap(),
        vec![
            ("tandem".to_owned(), "node-azure-0".to_owned()),
            ("edge".to_owned(), "edge-5c".to_owned())
        ]
    );
}
