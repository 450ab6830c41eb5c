//! Checks of `deploy/container` that need no Docker daemon (none runs on
//! these machines, so the image itself is never built here):
//! - the Dockerfile's shape: a builder stage that builds `tandem`, a
//!   distroless runtime stage with a numeric non-root USER, and an
//!   ENTRYPOINT that is the path the COPY puts the binary at;
//! - every shared library the `tandem` binary links (`ldd`, mapped to its
//!   Debian package with `dpkg -S`) is one the runtime base image ships;
//! - the exact arguments the Kubernetes manifests give the node, edge,
//!   controller and warm-up containers are accepted by the binary, with
//!   the rendered ConfigMaps as their files: each process starts and
//!   serves (node /readyz, edge /healthz, controller /status), then stops
//!   on SIGTERM. Mount paths are mapped to a temporary directory and
//!   listen addresses to free loopback ports; the node runs on the file
//!   log instead of Kafka (TANDEM_LOG_KIND=file), since no broker is
//!   reachable here.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tandem_control::supervise::{http_status, target_binary, Supervised};
use tandem_deploy::{deploy, tool};
use tandem_log::conformance::TempDir;

/// Debian 12 packages in `gcr.io/distroless/cc-debian12`: the base layer's
/// (GoogleContainerTools/distroless `base/config.bzl`, BASE_PACKAGES
/// debian12: libc6, libssl3), the cc layer's (`cc/config.bzl`, CC_PACKAGES
/// debian12: libgomp1, libstdc++6, libgcc-s1, gcc-12-base), and the static
/// layer's files (base-files, netbase, tzdata, ca-certificates) that hold
/// no shared library.
const RUNTIME_PACKAGES: &[&str] = &[
    "libc6",
    "libssl3",
    "libgomp1",
    "libstdc++6",
    "libgcc-s1",
    "gcc-12-base",
    "base-files",
    "netbase",
    "tzdata",
    "ca-certificates",
];

/// The runtime base the list above describes.
const RUNTIME_BASE: &str = "gcr.io/distroless/cc-debian12";

fn dockerfile() -> String {
    std::fs::read_to_string(deploy("container/Dockerfile"))
        .expect("read deploy/container/Dockerfile")
}

/// One build stage: its FROM image, its name, and its instructions (the
/// keyword upper-cased, continuation lines joined).
#[derive(Debug)]
struct Stage {
    from: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

fn stages(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(body) = t.strip_suffix('\\') {
            cur.push_str(body);
            cur.push(' ');
        } else {
            cur.push_str(t);
            logical.push(std::mem::take(&mut cur));
        }
    }
    let mut out: Vec<Stage> = Vec::new();
    for l in logical {
        let (kw, rest) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let kw = kw.to_ascii_uppercase();
        let rest = rest.trim().to_string();
        if kw == "FROM" {
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match words.as_slice() {
                [_, as_, n] if as_.eq_ignore_ascii_case("as") => Some(n.to_string()),
                _ => None,
            };
            out.push(Stage {
                from: words[0].to_string(),
                name,
                instructions: Vec::new(),
            });
        } else if let Some(s) = out.last_mut() {
            s.instructions.push((kw, rest));
        }
    }
    out
}

#[test]
fn the_dockerfile_builds_in_one_stage_and_runs_as_non_root_in_another() {
    let st = stages(&dockerfile());
    assert!(st.len() >= 2, "a builder and a runtime stage: {st:?}");
    let builder = &st[0];
    assert_eq!(builder.name.as_deref(), Some("builder"));
    assert!(
        builder.from.contains("rust:") && builder.from.contains("bookworm"),
        "builder: a Debian bookworm Rust image, not {}",
        builder.from
    );
    assert!(
        builder
            .instructions
            .iter()
            .any(|(k, v)| k == "RUN" && v.contains("cargo build --release --locked -p tandem-cli")),
        "the builder builds tandem-cli, locked, in release"
    );
    let runtime = st.last().unwrap();
    assert!(
        runtime.from.starts_with(RUNTIME_BASE),
        "runtime base {} is not {RUNTIME_BASE}, which RUNTIME_PACKAGES describes",
        runtime.from
    );

    // USER: numeric and not root, in the final stage.
    let user = runtime
        .instructions
        .iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, v)| v.clone())
        .expect("USER in the final stage");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user} is not numeric (runAsNonRoot needs a number)"));
    assert_ne!(uid, 0, "USER is root");
    if let Some(gid) = user.split(':').nth(1) {
        assert_ne!(
            gid.parse::<u32>().expect("numeric group"),
            0,
            "group is root"
        );
    }

    // ENTRYPOINT (exec form) is where the COPY from the builder puts the
    // binary, and the builder produces that file.
    let entry = runtime
        .instructions
        .iter()
        .rev()
        .find(|(k, _)| k == "ENTRYPOINT")
        .map(|(_, v)| v.clone())
        .expect("ENTRYPOINT");
    let entry: Vec<String> = serde_json::from_str(&entry).expect("ENTRYPOINT in exec (JSON) form");
    assert_eq!(
        entry.len(),
        1,
        "the entrypoint is the binary alone: the role is the argument"
    );
    let copy = runtime
        .instructions
        .iter()
        .find(|(k, v)| k == "COPY" && v.starts_with("--from=builder"))
        .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>())
        .expect("COPY --from=builder");
    let (src, dst) = (copy[copy.len() - 2], copy[copy.len() - 1]);
    assert_eq!(
        dst, entry[0],
        "ENTRYPOINT {} is not where COPY puts the binary ({dst})",
        entry[0]
    );
    assert!(
        builder
            .instructions
            .iter()
            .any(|(k, v)| k == "RUN" && v.contains("target/release/tandem") && v.contains(src)),
        "the builder writes {src} from target/release/tandem"
    );
}

#[test]
fn the_binary_needs_only_libraries_of_the_runtime_base() {
    let bin = target_binary("tandem", "TANDEM_BIN");
    let ldd = tool("ldd").expect("ldd (Debian's libc-bin) is needed for this check");
    let dpkg = tool("dpkg").expect("dpkg is needed for this check (Debian)");
    let out = Command::new(ldd).arg(&bin).output().expect("run ldd");
    assert!(
        out.status.success(),
        "ldd {}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", or the
        // loader by path; linux-vdso is the kernel's and has no file.
        let path = match line.split_once("=>") {
            Some((_, rhs)) => rhs.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        assert!(path != "not", "unresolved library: {line}");
        if path.starts_with('/') {
            libs.push(path.to_string());
        } else {
            assert!(
                line.starts_with("linux-vdso") || line.starts_with("linux-gate"),
                "unexpected ldd line: {line}"
            );
        }
    }
    assert!(
        libs.iter().any(|l| l.contains("libc.so")),
        "ldd found no libc: {text}"
    );
    // Debian 12 merged /lib into /usr/lib: ldd names a library by the
    // path the loader found (/lib/...), while a package may have
    // registered it under /usr/lib/... (libssl3 does, libc6 does not).
    let owner_of = |path: &str| {
        let out = Command::new(&dpkg)
            .arg("-S")
            .arg(path)
            .output()
            .expect("run dpkg -S");
        out.status
            .success()
            .then(|| String::from_utf8(out.stdout).unwrap())
    };
    for lib in &libs {
        let owner = owner_of(lib)
            .or_else(|| {
                lib.starts_with("/lib")
                    .then(|| owner_of(&format!("/usr{lib}")))
                    .flatten()
            })
            .unwrap_or_else(|| panic!("dpkg -S {lib}: no package ships it"));
        let pkg = owner.split(':').next().unwrap().trim().to_string();
        assert!(
            RUNTIME_PACKAGES.contains(&pkg.as_str()),
            "{lib} comes from Debian package {pkg}, which {RUNTIME_BASE} does not ship"
        );
    }
}

/// `kubectl kustomize deploy/kubernetes/overlays/<overlay>`.
fn render(overlay: &str) -> Vec<Value> {
    tandem_deploy::render_overlay(overlay).unwrap_or_else(|e| panic!("{e}"))
}

/// The pod spec of the workload `kind`/`name`.
fn pod<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let o = objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"));
    &o["spec"]["template"]["spec"]
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A container as the test runs it: its args with every mount path mapped
/// under `root` (ConfigMap volumes written there from the rendered
/// ConfigMaps, other volumes as empty directories).
struct Local {
    args: Vec<String>,
    mounts: BTreeMap<String, PathBuf>,
}

fn localise(objects: &[Value], pod: &Value, container: &Value, root: &Path) -> Local {
    let mut mounts = BTreeMap::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        let vol_name = m["name"].as_str().unwrap();
        let dir = root.join(vol_name);
        std::fs::create_dir_all(&dir).unwrap();
        let vol = pod["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == vol_name);
        if let Some(cm) = vol.and_then(|v| v["configMap"]["name"].as_str()) {
            let cm = objects
                .iter()
                .find(|o| o["kind"] == "ConfigMap" && o["metadata"]["name"] == cm)
                .unwrap_or_else(|| panic!("no ConfigMap {cm}"));
            for (k, v) in cm["data"].as_object().unwrap() {
                std::fs::write(dir.join(k), v.as_str().unwrap()).unwrap();
            }
        }
        mounts.insert(m["mountPath"].as_str().unwrap().to_string(), dir);
    }
    let args = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let a = a.as_str().unwrap().to_string();
            mounts
                .iter()
                .find_map(|(mp, dir)| {
                    a.strip_prefix(&format!("{mp}/"))
                        .map(|rest| dir.join(rest).display().to_string())
                })
                .unwrap_or(a)
        })
        .collect();
    Local { args, mounts }
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod[list]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

#[test]
fn the_manifests_arguments_start_the_binary() {
    let bin = target_binary("tandem", "TANDEM_BIN");
    let objects = render("eks");
    let tmp = TempDir::new("tandem-container-args");

    // Warm-up: the init container's command exits 0.
    let warm = pod(&objects, "DaemonSet", "tandem-warmup");
    let init = container(warm, "initContainers", "pull-tandem");
    let args: Vec<String> = serde_json::from_value(init["args"].clone()).unwrap();
    let out = Command::new(&bin).args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "warm-up `tandem {args:?}` exits {}",
        out.status
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")),
        "warm-up prints the version"
    );

    // Node: its args, its ConfigMap, its pod's env; file log and a free
    // loopback port instead of Kafka and 0.0.0.0:8080.
    let node_pod = pod(&objects, "StatefulSet", "tandem-node");
    let node_c = container(node_pod, "containers", "node");
    let node = localise(&objects, node_pod, node_c, &tmp.path().join("node"));
    let data = node.mounts["/var/lib/tandem"].clone();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(&bin);
    cmd.args(&node.args)
        .env("TANDEM_NODE", "tandem-node-0")
        .env("TANDEM_ZONE", "us-east-1a")
        .env("TANDEM_LOG_KIND", "file")
        .env("TANDEM_DATA_DIR", data.join("data"))
        .env("TANDEM_LISTEN", addr.to_string());
    let log = tmp.path().join("node.log");
    let mut p = Supervised::start_logged("node", cmd, &log).unwrap();
    p.wait_http_ready(addr, "/readyz", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("node with the manifest's args: {e}"));
    assert_eq!(http_status(addr, "/healthz"), Some(200));
    let grace = node_pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let status = p
        .stop(Duration::from_secs(grace))
        .expect("the node stops within its grace period");
    assert!(
        status.success(),
        "node exit {status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("\"msg\":\"stopped\""),
        "the node drained and stopped: {text}"
    );
    assert!(
        text.contains("\"cluster\":\"aws\"")
            && text.contains("\"role\":\"stable\"")
            && text.contains("\"zone\":\"us-east-1a\""),
        "node labels: {text}"
    );

    // Edge: its args and ConfigMap, listeners moved to free ports (the
    // edge has no environment override for them), token as the Secret
    // would give it.
    let edge_pod = pod(&objects, "Deployment", "tandem-edge");
    let edge_c = container(edge_pod, "containers", "edge");
    let edge = localise(&objects, edge_pod, edge_c, &tmp.path().join("edge"));
    let cfg_path =
        PathBuf::from(&edge.args[edge.args.iter().position(|a| a == "--config").unwrap() + 1]);
    let mut cfg: toml::Table = std::fs::read_to_string(&cfg_path).unwrap().parse().unwrap();
    let (public, admin) = (free_port(), free_port());
    cfg.insert("listen".into(), format!("127.0.0.1:{public}").into());
    cfg.insert("admin_listen".into(), format!("127.0.0.1:{admin}").into());
    std::fs::write(&cfg_path, toml::to_string(&cfg).unwrap()).unwrap();
    let mut cmd = Command::new(&bin);
    cmd.args(&edge.args)
        .env("TANDEM_EDGE_ADMIN_TOKEN", "test-token");
    let log = tmp.path().join("edge.log");
    let mut p = Supervised::start_logged("edge", cmd, &log).unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    p.wait_http_ready(admin_addr, "/healthz", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("edge with the manifest's args: {e}"));
    // The token was read: the admin API answers 401 without it, not 403
    // "disabled".
    let status = http_status(admin_addr, "/admin/weights");
    assert_eq!(status, Some(401), "admin API without a token");
    let status = p.stop(Duration::from_secs(40)).expect("the edge stops");
    assert!(status.success(), "edge exit {status}");

    // Controller: its args with the plan from its ConfigMap, the state on
    // a temporary directory and a free port for --listen. The edges are
    // unreachable here: the controller pauses ("missing data is never a
    // pass") and keeps serving its status.
    let ctl_pod = pod(&objects, "Deployment", "tandem-controller");
    let ctl_c = container(ctl_pod, "containers", "controller");
    let mut ctl = localise(&objects, ctl_pod, ctl_c, &tmp.path().join("controller"));
    let port = free_port();
    let i = ctl.args.iter().position(|a| a == "--listen").unwrap();
    ctl.args[i + 1] = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(&bin);
    cmd.args(&ctl.args)
        .env("TANDEM_EDGE_ADMIN_TOKEN", "test-token");
    let log = tmp.path().join("controller.log");
    let mut p = Supervised::start_logged("controller", cmd, &log).unwrap();
    let ctl_addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    p.wait_http_ready(ctl_addr, "/status", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("controller with the manifest's args: {e}"));
    let state_dir = &ctl.mounts["/var/lib/tandem-controller"];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !state_dir.join("state.json").is_file() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        state_dir.join("state.json").is_file(),
        "the controller saves its state on the volume"
    );
    let _ = p.stop(Duration::from_secs(30));

    // And the plan passes `tandem rollout check` as a file on its own.
    let plan = &ctl.args[ctl.args.iter().position(|a| a == "--plan").unwrap() + 1];
    let out = Command::new(&bin)
        .args(["rollout", "check", "--plan", plan])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rollout check: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether a `.dockerignore` line (the forms used in
/// `Dockerfile.dockerignore`: a path, `**/name`, `*.ext`) excludes `rel`,
/// a path relative to the context's root.
fn ignored_by(pattern: &str, rel: &str) -> bool {
    if let Some(name) = pattern.strip_prefix("**/") {
        return rel.split('/').any(|c| c == name);
    }
    if let Some(ext) = pattern.strip_prefix('*') {
        return !ext.contains('/') && rel.ends_with(ext);
    }
    rel == pattern || rel.starts_with(&format!("{pattern}/"))
}

/// Every file under `dir` whose name ends in `.rs`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_build_context_keeps_what_the_build_reads() {
    let root = tandem_deploy::repo_root();
    let ignore = std::fs::read_to_string(deploy("container/Dockerfile.dockerignore"))
        .expect("read Dockerfile.dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        patterns.contains(&"target"),
        "target/ (tens of GB) must stay out of the context"
    );
    assert!(patterns.contains(&".git"));
    // The manifests, the lock file, every crate, and every file a crate
    // includes at compile time (include_str!/include_bytes! of a literal
    // path, such as the sample configs under deploy/).
    let mut needed: Vec<String> = ["Cargo.toml", "Cargo.lock"].map(String::from).to_vec();
    let mut files = Vec::new();
    for e in std::fs::read_dir(root.join("crates")).unwrap().flatten() {
        let krate = e.path();
        needed.push(
            krate
                .strip_prefix(&root)
                .unwrap()
                .join("Cargo.toml")
                .display()
                .to_string(),
        );
        if krate.join("src").is_dir() {
            rust_files(&krate.join("src"), &mut files);
        }
    }
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        for marker in ["include_str!(\"", "include_bytes!(\""] {
            for part in text.split(marker).skip(1) {
                let lit = part.split('"').next().unwrap();
                let target = f.parent().unwrap().join(lit);
                if let Ok(abs) = target.canonicalize() {
                    needed.push(abs.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
    }
    assert!(
        needed.iter().any(|n| n == "deploy/node/tandem-node.toml"),
        "the scan found the node's sample config: {needed:?}"
    );
    for n in &needed {
        for p in &patterns {
            assert!(
                !ignored_by(p, n),
                "Dockerfile.dockerignore line {p:?} drops {n}, which the build reads"
            );
        }
    }
}
