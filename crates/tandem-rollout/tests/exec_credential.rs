//! Bounded fuzzing of what a credential plugin hands the controller (its
//! standard output, the expiry time in it) and of kubeconfigs with an
//! `exec` user: never a panic, and what is accepted reads back as written.

mod mutate;

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;
use tandem_conn::civil_from_days;
use tandem_rollout::exec_credential::{parse_output, parse_rfc3339, API_VERSIONS};

const OUTPUT: &str = r#"{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","spec":{"interactive":false},"status":{"token":"k8s-aws-v1.aHR0cHM6Ly9zdHM","expirationTimestamp":"2026-12-06T14:05:09Z"}}"#;

/// What the mutations insert.
const CHARS: &str = " -~\\n\\t{}\\[\\]:,\"\\\\-";

const KUBECONFIG: &str = "apiVersion: v1
kind: Config
clusters:
- name: eks
  cluster:
    server: https://ABCDEF.gr7.eu-west-1.eks.amazonaws.com
contexts:
- name: aws
  context:
    cluster: eks
    user: eks-user
users:
- name: eks-user
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: aws
      args: [--region, eu-west-1, eks, get-token, --cluster-name, tandem]
      env:
      - name: AWS_PROFILE
        value: release
      interactiveMode: IfAvailable
      provideClusterInfo: false
";

proptest! {
    // PROPTEST_CASES sets the number of cases (default 256).
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_plugin_output_is_read_or_refused(out in mutate::mutated(OUTPUT, CHARS)) {
        if let Ok(t) = parse_output(API_VERSIONS[0], out.as_bytes()) {
            prop_assert!(!t.token.is_empty() && t.token.trim() == t.token);
            let header = format!("Bearer {}", t.token);
            prop_assert!(http::HeaderValue::from_str(&header).is_ok());
        }
    }

    #[test]
    fn any_bytes_are_read_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_output(API_VERSIONS[1], &bytes);
        let _ = parse_rfc3339(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn written_times_read_back(secs in 0i64..253_402_300_800, nanos in 0u32..1_000_000_000, off in -1439i64..1440) {
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let tod = secs.rem_euclid(86_400);
        let z = format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", tod / 3600, tod / 60 % 60, tod % 60);
        let want = UNIX_EPOCH + Duration::new(secs as u64, nanos);
        prop_assert_eq!(parse_rfc3339(&z), Some(want), "{}", z);
        // The same instant written in another zone.
        let local = secs + off * 60;
        prop_assume!(local >= 0);
        let (y, mo, d) = civil_from_days(local.div_euclid(86_400));
        let tod = local.rem_euclid(86_400);
        let sign = if off < 0 { '-' } else { '+' };
        let zoned = format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}", tod / 3600, tod / 60 % 60, tod % 60, off.abs() / 60, off.abs() % 60);
        prop_assert_eq!(parse_rfc3339(&zoned), Some(UNIX_EPOCH + Duration::from_secs(secs as u64)), "{}", zoned);
    }

    #[test]
    fn any_kubeconfig_with_a_plugin_is_read_or_refused(text in mutate::mutated(KUBECONFIG, CHARS)) {
        if let Ok(ctx) = tandem_rollout::kubeconfig::parse(&text, "kubeconfig", Path::new("/tmp"), "aws") {
            if let Some(p) = &ctx.exec {
                prop_assert!(API_VERSIONS.contains(&p.api_version.as_str()));
                prop_assert!(!p.command.is_empty());
            }
        }
    }
}

#[test]
fn the_unmutated_inputs_are_accepted() {
    let t = parse_output(API_VERSIONS[0], OUTPUT.as_bytes()).expect("a token");
    assert_eq!(t.token, "k8s-aws-v1.aHR0cHM6Ly9zdHM");
    let ctx = tandem_rollout::kubeconfig::parse(KUBECONFIG, "kubeconfig", Path::new("/tmp"), "aws")
        .expect("the kubeconfig");
    // No token or argument in the context's debug output.
    assert!(!format!("{ctx:?}").contains("get-token"));
    let p = ctx.exec.clone().expect("a plugin");
    assert_eq!(p.api_version, API_VERSIONS[1]);
    assert_eq!(
        p.program,
        Path::new("aws"),
        "a bare name is looked up on PATH"
    );
    assert_eq!(p.args.len(), 6);
    assert_eq!(p.env, vec![("AWS_PROFILE".into(), "release".into())]);
    assert!(p.cluster.is_none());
    assert!(ctx.token.is_none() && ctx.client.is_none());
}
