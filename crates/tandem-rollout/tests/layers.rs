//! The Cloudflare and Consul layers against the shapes of their APIs (no
//! Cloudflare account or Consul agent is reachable from the build
//! machines): the routes document is what the Worker parses, the requests
//! have the method, path, headers and body of the API references, and the
//! recorded answers (success, refusal, a lost check-and-set) are read as
//! they mean.

mod common;

use std::collections::BTreeMap;

use serde_json::{json, Value};
use tandem_rollout::cloudflare::{self, CloudflareError, KvTarget};
use tandem_rollout::consul::{self, ConsulError};
use tandem_rollout::plan::{Plan, Version};

fn plan() -> Plan {
    common::plan_of(&[
        ("aws", Version::Stable),
        ("gcp", Version::Canary),
        ("azure", Version::Canary),
    ])
}

fn weights() -> BTreeMap<String, u32> {
    [("aws", 95), ("gcp", 5), ("azure", 0)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn target() -> KvTarget {
    KvTarget {
        account_id: "023e105f4ecef8ad9ca31a8372d0c353".into(),
        namespace_id: "0f2ac74b498b48028cb68387c421e279".into(),
        origins: ["aws", "gcp", "azure"]
            .into_iter()
            .map(|c| (c.to_owned(), format!("https://{c}.tandem.example")))
            .collect(),
    }
}

#[test]
fn the_routes_document_is_what_the_worker_reads() {
    let doc: Value =
        serde_json::from_str(&cloudflare::routes_json(&plan(), &weights(), &target()).unwrap())
            .unwrap();
    assert_eq!(
        doc,
        json!({"clusters": [
            {"name": "aws", "role": "stable", "weight": 95, "origin": "https://aws.tandem.example"},
            {"name": "gcp", "role": "canary", "weight": 5, "origin": "https://gcp.tandem.example"},
            {"name": "azure", "role": "canary", "weight": 0, "origin": "https://azure.tandem.example"}
        ]})
    );
    let mut t = target();
    t.origins.remove("gcp");
    assert_eq!(
        cloudflare::routes_json(&plan(), &weights(), &t),
        Err(CloudflareError::NoOrigin("gcp".into()))
    );
}

#[test]
fn the_kv_write_is_the_api_reference_request() {
    let r = cloudflare::write_request(&target(), "tok", "{}").unwrap();
    assert_eq!(r.method(), http::Method::PUT);
    assert_eq!(
        r.uri().to_string(),
        "https://api.cloudflare.com/client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/storage/kv/namespaces/0f2ac74b498b48028cb68387c421e279/values/routes"
    );
    assert_eq!(r.headers()["authorization"], "Bearer tok");
    assert_eq!(r.body(), b"{}");
    let mut bad = target();
    bad.namespace_id = "../other".into();
    assert!(matches!(
        cloudflare::write_request(&bad, "tok", "{}"),
        Err(CloudflareError::BadId(_))
    ));
    assert_eq!(
        cloudflare::write_request(&target(), "t\nx", "{}").unwrap_err(),
        CloudflareError::BadToken
    );
}

#[test]
fn kv_answers_are_read_as_they_mean() {
    // Recorded shapes of the v4 API's envelope.
    let ok = br#"{"result":null,"success":true,"errors":[],"messages":[]}"#;
    assert_eq!(cloudflare::read_answer(200, ok), Ok(()));
    let denied =
        br#"{"result":null,"success":false,"errors":[{"code":10000,"message":"Authentication error"}],"messages":[]}"#;
    match cloudflare::read_answer(403, denied) {
        Err(CloudflareError::Refused { status, messages }) => {
            assert_eq!(status, 403);
            assert_eq!(messages, "10000 Authentication error");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        cloudflare::read_answer(502, b"<html>bad gateway</html>"),
        Err(CloudflareError::Unreadable { status: 502 })
    );
}

#[test]
fn consul_entries_split_by_the_weights() {
    assert_eq!(
        consul::splitter_entry(&plan(), "tandem-node", &weights()),
        json!({
            "Kind": "service-splitter",
            "Name": "tandem-node",
            "Splits": [
                {"Weight": 95, "ServiceSubset": "aws"},
                {"Weight": 5, "ServiceSubset": "gcp"},
                {"Weight": 0, "ServiceSubset": "azure"}
            ]
        })
    );
    assert_eq!(
        consul::resolver_entry(&plan(), "tandem-node"),
        json!({
            "Kind": "service-resolver",
            "Name": "tandem-node",
            "DefaultSubset": "aws",
            "Subsets": {
                "aws": {"Filter": "Service.Meta.cluster == aws"},
                "gcp": {"Filter": "Service.Meta.cluster == gcp"},
                "azure": {"Filter": "Service.Meta.cluster == azure"}
            }
        })
    );
}

#[test]
fn consul_writes_check_and_set_on_the_entry_index() {
    let entry = consul::splitter_entry(&plan(), "tandem-node", &weights());
    let r = consul::put_request("http://127.0.0.1:8500/", Some("acl"), &entry, Some(41)).unwrap();
    assert_eq!(r.method(), http::Method::PUT);
    assert_eq!(
        r.uri().to_string(),
        "http://127.0.0.1:8500/v1/config?cas=41"
    );
    assert_eq!(r.headers()["x-consul-token"], "acl");
    assert_eq!(serde_json::from_slice::<Value>(r.body()).unwrap(), entry);
    let g = consul::get_request("http://c:8500", None, "service-splitter", "tandem-node").unwrap();
    assert_eq!(
        g.uri().to_string(),
        "http://c:8500/v1/config/service-splitter/tandem-node"
    );
    for bad in ["c:8500", "http://", "http://c/x", "ftp://c"] {
        assert!(
            matches!(
                consul::put_request(bad, None, &entry, None),
                Err(ConsulError::BadUrl(_))
            ),
            "{bad}"
        );
    }
    // Recorded answers: `true` written, `false` a lost check-and-set.
    assert_eq!(consul::read_put_answer(200, b"true", Some(41)), Ok(()));
    assert_eq!(
        consul::read_put_answer(200, b"false", Some(41)),
        Err(ConsulError::Stale(41))
    );
    assert!(matches!(
        consul::read_put_answer(403, b"Permission denied", None),
        Err(ConsulError::Refused { status: 403, .. })
    ));
    let read = br#"{"Kind":"service-splitter","Name":"tandem-node","Splits":[],"CreateIndex":12,"ModifyIndex":41}"#;
    assert_eq!(consul::read_modify_index(200, read), Ok(Some(41)));
    assert_eq!(consul::read_modify_index(404, b""), Ok(None));
}
