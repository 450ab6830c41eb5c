//! `tandem rollout check` as a user runs it: the shipped seed plan passes
//! (exit 0, its summary on standard output, scaled with `--time-scale`); a
//! plan that breaks a rule exits 1 with `FILE:LINE:COL: FIELD: message` on
//! standard error; `--help` exits 0; a bad command line exits 2 (also for
//! `run` and the control commands); a control command with no controller
//! there, or `run` without the admin token, exits 1; `run` with a
//! kubeconfig whose credential plugin fails exits 1 naming it, before
//! anything starts; so do `restart` and `drain`, whose command lines are
//! checked like the others'. (Their requests are tested against a fake
//! API server in `tandem-rollout/tests/https_actuators.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::tandem;

fn seed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rollout/seed.yaml")
}

fn scratch(name: &str) -> PathBuf {
    common::scratch(&format!("rollout_check-{name}"))
}

#[test]
fn the_seed_plan_passes_with_its_summary() {
    let seed = seed();
    let (code, out, err) = tandem(&["rollout", "check", "--plan", seed.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "");
    for want in [
        ": ok\n",
        "release: match-engine v2",
        "aws    stable  start running  zones use1-az1, use1-az2, use1-az3",
        "azure  canary  start cold     zones eus-1, eus-2, eus-3",
        "http://127.0.0.1:8001",
        "metrics: scrape every 1s",
        "baseline: 1m",
        "breach_for                   2s",
        "warm-up  hold 1d  aws 100, gcp 0, azure 0",
        "canary   hold 1d  aws 95, gcp 5, azure 0",
        "expand   hold 2d  aws 70, gcp 30, azure 0",
        "balance  hold 1d  aws 45, gcp 45, azure 10",
        "done     hold 0   aws 34, gcp 33, azure 33",
        "on_failure: rollback",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
}

#[test]
fn time_scale_shows_the_scaled_holds_and_floors() {
    let seed = seed();
    let (code, out, err) = tandem(&[
        "rollout",
        "check",
        "--plan",
        seed.to_str().unwrap(),
        "--time-scale=17280",
    ]);
    assert_eq!(code, 0, "{err}");
    for want in [
        "time scale: 17280",
        "baseline: 10s",
        "breach_for                   2s",
        "warm-up  hold 5s   aws 100",
        "expand   hold 10s  aws 70",
        "done     hold 0    aws 34",
    ] {
        assert!(out.contains(want), "{want:?} in\n{out}");
    }
    for bad in ["0", "-2", "fast", "NaN", "inf"] {
        let (code, out, err) = tandem(&[
            "rollout",
            "check",
            "--plan",
            seed.to_str().unwrap(),
            "--time-scale",
            bad,
        ]);
        assert_eq!(code, 2, "--time-scale {bad}: {err}");
        assert_eq!(out, "");
        assert!(err.contains("--time-scale"), "{err}");
        assert!(err.contains("usage: tandem rollout check"), "{err}");
    }
}

#[test]
fn a_bad_plan_exits_1_naming_file_line_and_field() {
    let dir = scratch("bad");
    let text = std::fs::read_to_string(seed()).unwrap();
    let cases = [
        // (from, to, field): the error is on the line of `to`.
        (
            "gcp: 5,  azure: 0",
            "gcp: 4,  azure: 0",
            "phases[1].weights",
        ),
        (
            "gcp: 30, azure: 0",
            "gcp: 30, oracle: 0",
            "phases[2].weights.oracle",
        ),
        ("breach_for: 2s", "breach_for: 2 secs", "gates.breach_for"),
        ("breach_for: 2s", "breach_fr: 2s", "gates.breach_fr"),
        ("start: cold", "start: hot", "clusters.azure.start"),
    ];
    for (i, (from, to, field)) in cases.into_iter().enumerate() {
        assert_eq!(text.matches(from).count(), 1, "{from}");
        let bad = text.replacen(from, to, 1);
        let line = bad[..bad.find(to).unwrap()].matches('\n').count() + 1;
        let path = dir.join(format!("plan-{i}.yaml"));
        std::fs::write(&path, &bad).unwrap();
        let path = path.to_str().unwrap();
        let (code, out, err) = tandem(&["rollout", "check", "--plan", path]);
        assert_eq!(code, 1, "{to}: {err}");
        assert_eq!(out, "", "nothing on stdout for a refused plan");
        let prefix = format!("{path}:{line}:");
        assert!(err.starts_with(&prefix), "{prefix} in {err:?}");
        assert!(err.contains(&format!(": {field}: ")), "{field} in {err:?}");
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    }
}

#[test]
fn a_missing_plan_file_exits_1_naming_it() {
    let dir = scratch("missing");
    let path = dir.join("nope.yaml");
    let path = path.to_str().unwrap();
    let (code, _, err) = tandem(&["rollout", "check", "--plan", path]);
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with(&format!("{path}: cannot read")), "{err}");
}

#[test]
fn help_exits_0_and_a_bad_command_line_exits_2() {
    for args in [
        &["rollout", "--help"][..],
        &["rollout", "-h"],
        &["help", "rollout"],
        &["rollout", "check", "--help"],
    ] {
        let (code, out, err) = tandem(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            out.starts_with("usage: tandem rollout check --plan FILE"),
            "{args:?}: {out}"
        );
        assert_eq!(err, "");
    }
    let (_, out, _) = tandem(&["--help"]);
    assert!(
        out.contains("\n  rollout check|run|status|pause|resume|promote|abort"),
        "{out}"
    );
    for (args, first) in [
        (
            &["rollout", "run", "--help"][..],
            "usage: tandem rollout run --plan FILE",
        ),
        (
            &["rollout", "status", "-h"],
            "usage: tandem rollout status|pause",
        ),
    ] {
        let (code, out, _) = tandem(args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.starts_with(first), "{args:?}: {out}");
    }
    for args in [
        &["rollout"][..],
        &["rollout", "check"],
        &["rollout", "check", "--plan"],
        &["rollout", "check", "--plan", "x.yaml", "--force"],
        &["rollout", "deploy"],
        &["rollout", "--plan", "x.yaml"],
    ] {
        let (code, out, err) = tandem(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert!(err.contains("usage: tandem rollout"), "{args:?}: {err}");
    }
}

#[test]
fn run_and_the_control_commands_check_their_command_line() {
    let seed = seed();
    let plan = seed.to_str().unwrap();
    // Bad command lines: exit 2 with the command's usage.
    for args in [
        vec!["rollout", "run"],
        vec!["rollout", "run", "--plan", plan, "--start", "nope"],
        vec!["rollout", "run", "--plan", plan, "--start", "mars=true"],
        vec!["rollout", "run", "--plan", plan, "--listen", "here"],
        vec!["rollout", "run", "--plan", plan, "--time-scale", "0"],
        vec!["rollout", "status", "--plan", plan],
        vec!["rollout", "abort", "--controller"],
    ] {
        let (code, out, err) = tandem(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert!(err.contains("usage: tandem rollout"), "{args:?}: {err}");
    }
    // No controller there: the job fails (1) naming it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for sub in ["status", "pause", "resume", "promote", "abort"] {
        let url = format!("http://127.0.0.1:{port}");
        let (code, _, err) = tandem(&["rollout", sub, "--controller", &url]);
        assert_eq!(code, 1, "{sub}: {err}");
        assert!(
            err.contains("unreachable") && err.contains(&url),
            "{sub}: {err}"
        );
    }
}

#[test]
fn run_without_the_admin_token_fails_before_anything_changes() {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["rollout", "run", "--plan", seed().to_str().unwrap()])
        .env_remove("TANDEM_EDGE_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .output()
        .expect("run tandem");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("TANDEM_EDGE_ADMIN_TOKEN"), "{err}");
}

#[test]
fn run_runs_a_kubeconfig_credential_plugin_before_anything_changes() {
    let dir = scratch("kube-plugin");
    let kc = failing_plugin_kubeconfig(&dir);
    let state = dir.join("state.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .args(["rollout", "run", "--plan", seed().to_str().unwrap()])
        .args(["--state", state.to_str().unwrap()])
        .args([
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--kube",
            "azure=aks-prod",
        ])
        .env("TANDEM_EDGE_ADMIN_TOKEN", "admin-token-for-the-test")
        .stdin(Stdio::null())
        .output()
        .expect("run tandem");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        "tandem: --kube azure: context aks-prod: credential plugin \"./bin/get-token\" (users[u].user.exec): exited with exit status: 255: error: the SSO session has expired; run: aws sso login"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("runs")).unwrap(),
        "ran\n",
        "run once, relative to the kubeconfig's directory"
    );
    assert!(!state.exists(), "nothing started");
}

/// A kubeconfig in `dir` whose user's credential plugin fails (an expired
/// login) and counts its runs in `dir/runs`.
fn failing_plugin_kubeconfig(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let plugin = dir.join("bin/get-token");
    std::fs::write(
        &plugin,
        "#!/bin/sh\necho ran >> \"$(dirname \"$0\")/../runs\"\necho 'error: the SSO session has expired; run: aws sso login' >&2\nexit 255\n",
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kc = dir.join("kubeconfig");
    std::fs::write(
        &kc,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: aks\n  cluster:\n    server: https://127.0.0.1:6443\n\
         contexts:\n- name: aks-prod\n  context:\n    cluster: aks\n    user: u\n\
         users:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ./bin/get-token\n      interactiveMode: Never\n",
    )
    .unwrap();
    kc
}

#[test]
fn restart_and_drain_check_their_command_line_and_the_login_first() {
    let dir = scratch("kube-ops");
    let kc = failing_plugin_kubeconfig(&dir);
    let kc = kc.to_str().unwrap();
    for sub in ["restart", "drain"] {
        let (code, out, err) = tandem(&["rollout", sub, "--help"]);
        assert_eq!(code, 0, "{sub}: {err}");
        assert!(
            out.starts_with(&format!("usage: tandem rollout {sub}")),
            "{out}"
        );
    }
    // Each case: the subcommand and its flags after the kubeconfig.
    let line = |sub: &'static str, rest: &[&'static str]| -> Vec<String> {
        let mut v = vec!["rollout".to_owned(), sub.to_owned()];
        v.extend(["--kubeconfig", kc].map(str::to_owned));
        v.extend(rest.iter().map(|s| (*s).to_owned()));
        v
    };
    let aks = ["--kube", "azure=aks-prod"];
    let with = |extra: &[&'static str]| -> Vec<&'static str> { [&aks[..], extra].concat() };
    let mut bad = vec![
        vec!["rollout".to_owned(), "restart".to_owned()],
        vec![
            "rollout".into(),
            "restart".into(),
            "--kube".into(),
            "azure=aks-prod".into(),
        ],
        line("restart", &[]),
        line("restart", &["--kube", "azure"]),
        line("restart", &["--kube", "azure=aks-prod/Tandem/x"]),
        line(
            "drain",
            &[
                "--kube",
                "azure=aks-prod/tandem/tandem-node",
                "--machine",
                "m",
            ],
        ),
    ];
    for extra in [
        &["--wait", "0"][..],
        &["--wait", "soon"],
        &["--machine", "m"],
    ] {
        bad.push(line("restart", &with(extra)));
    }
    for extra in [
        &[][..],
        &["--machine", "Not_A_Name"],
        &["--machine", "m", "--timeout", "-1"],
        &["--machine", "m", "--wait", "5"],
    ] {
        bad.push(line("drain", &with(extra)));
    }
    for args in bad {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = tandem(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert!(err.contains("usage: tandem rollout"), "{args:?}: {err}");
    }
    // A good command line whose login has expired: exit 1 naming the
    // plugin, run once, nothing sent.
    for args in [
        line("restart", &with(&["--wait", "60"])),
        line("drain", &with(&["--machine", "aks-pool-1"])),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let _ = std::fs::remove_file(dir.join("runs"));
        let (code, out, err) = tandem(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(
            err.trim_end(),
            "tandem: --kube azure: context aks-prod: credential plugin \"./bin/get-token\" (users[u].user.exec): exited with exit status: 255: error: the SSO session has expired; run: aws sso login",
            "{args:?}"
        );
        assert_eq!(std::fs::read_to_string(dir.join("runs")).unwrap(), "ran\n");
    }
    // A kubeconfig without that context: exit 1 naming file and context.
    let (code, _, err) = tandem(&[
        "rollout",
        "restart",
        "--kubeconfig",
        kc,
        "--kube",
        "azure=eks-prod",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("eks-prod") && err.contains(kc), "{err}");
}
