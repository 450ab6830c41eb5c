//! `tandem`: the one binary. It parses flags and calls library code; no
//! logic of its own lives here.
//!
//! Exit status: 0 on success and for `--help`/`-h` (on the binary and on
//! every command) and `--version`/`-V`; 2 for a command line that cannot
//! be used (unknown command or flag, missing or bad value), with the
//! usage of the command on standard error; 1 when the job itself fails.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};

use anyhow::{Context, Result};
use tandem_rollout::decide::Command;

const USAGE: &str = "\
usage: tandem <command> [flags]
       tandem --help | --version

commands:
  match [--input FILE] [--output FILE] [--chain]
        replay JSONL commands into JSONL events (contracts/match-jsonl.md);
        --chain prints the final seq and output hash chain to stderr
  node [--config FILE]
        run a node: the order-entry API (contracts/http-api.md) over the
        order log; without --config, the defaults of
        deploy/node/tandem-node.toml (file log in data/node-1, port 8080);
        TANDEM_* environment variables override the file
  edge [--config FILE]
        run the edge: weighted, version-pinned, account-sticky reverse
        proxy over the clusters' nodes (deploy/edge/tandem-edge.toml);
        SIGHUP reloads the file, SIGUSR2 hands the sockets to a new process
  loadgen [flags]
        open-loop load generator for nodes: fixed-rate schedule, latency
        from intended send time, order-flow verification (lost/duplicated)
  rollout check|run|status|pause|resume|promote|abort [flags]
        check a rollout plan (contracts/rollout-plan.md), run it (observe,
        judge, set weights on every edge, roll back), or steer a running
        controller
  demo [--scenario NAME] [flags]
        run the source's multi-cloud release on this machine with real
        processes (nine nodes on one Kafka log, edge, controller, load)
        and write a measured report (contracts/demo-report.md)
  keygen [--scheme ed25519|eip712] [--out FILE]
        make a signing key (docs/signing.md), write it to a key file and
        print its account
  order place|cancel|amend --key FILE --node URL [flags]
        sign one order-entry command with a key file and send it to a node
  verify-log (--log PATH | --config FILE) [--chain-id N] [--require-signed]
        verify the signature of every signed record of an order log (a
        file log directory or a JSONL file) and name the first bad one
  snapshot-export --from DATA_DIR --out DIR
        copy a node's newest snapshots, with the files beside them, into
        DIR for another node's [snapshot] seed_from
  help [command]
        this text, or a command's flags (as `tandem <command> --help`)

  -h, --help     this text
  -V, --version  print the version

`tandem <command> --help` lists a command's flags. Benchmarks are a
separate program: cargo run --release -p tandem-bench -- core
";

const MATCH_USAGE: &str = "\
usage: tandem match [--input FILE] [--output FILE] [--chain]

  replay JSONL commands into JSONL events (contracts/match-jsonl.md); exits 0
  whenever it could read its input, however many commands were bad

  --input FILE   commands, one JSON object a line         [standard input]
  --output FILE  events, one JSON object a line           [standard output]
  --chain        print the final seq, output hash chain, markets and live
                 orders to standard error
  -h, --help     this text
";

const NODE_USAGE: &str = "\
usage: tandem node [--config FILE]

  run a node: the order-entry API (contracts/http-api.md, HTTP/1.1, HTTP/2,
  gRPC and WebSocket on one port) over the order log, answered from the
  node's own replica

  --config FILE  the node's TOML config; without it, the defaults of
                 deploy/node/tandem-node.toml (file log in data/node-1,
                 port 8080)
  -h, --help     this text

TANDEM_* environment variables override the file (TANDEM_LISTEN,
TANDEM_NODE, TANDEM_CLUSTER, TANDEM_ZONE, TANDEM_ROLE, TANDEM_VERSION,
TANDEM_DATA_DIR, TANDEM_LOG_KIND, TANDEM_LOG_FSYNC, TANDEM_KAFKA_BROKERS,
TANDEM_KAFKA_TOPIC, TANDEM_KAFKA_PARTITIONS, TANDEM_AUTH). SIGTERM or
SIGINT drains and stops. Order entry is signed (docs/signing.md) unless the
listener is loopback or `auth = \"none\"` is set.
";

const EDGE_USAGE: &str = "\
usage: tandem edge [--config FILE]

  run the edge: weighted, version-pinned, account-sticky reverse proxy over
  the clusters' nodes

  --config FILE  the edge's TOML config (commented default:
                 deploy/edge/tandem-edge.toml); without it, its defaults
  -h, --help     this text

SIGHUP reloads the file; SIGUSR2 hands the listening sockets to a new
process (no connection refused); SIGTERM or SIGINT drains and stops.
";

const ROLLOUT_USAGE: &str = "\
usage: tandem rollout check --plan FILE [--time-scale K]
       tandem rollout run --plan FILE [--time-scale K] [--listen ADDR]
                          [--timeline FILE] [--state FILE] [--start CLUSTER=COMMAND]...
       tandem rollout status|pause|resume|promote|abort [--controller URL]
       tandem rollout restart --kubeconfig FILE --kube CLUSTER=CONTEXT[/NS/STS] [--wait SECS]
       tandem rollout drain --kubeconfig FILE --kube CLUSTER=CONTEXT --machine NAME
                            [--timeout SECS]

  the release plane (contracts/rollout-plan.md): moves client traffic
  between clusters phase by phase, judges every phase, rolls back

  check --plan FILE [--time-scale K]
        check the plan and print its summary (release, clusters, edges,
        metrics, baseline, gates, phases with hold and weights); nothing is
        started or changed. A plan that breaks a rule prints
        FILE:LINE:COL: FIELD: message on standard error and exits 1
  run   run the plan: observe, judge, set weights on every edge, roll back;
        exits 0 once every phase passed, 1 when it rolled back or failed
        (`tandem rollout run --help` for its flags)
  status
        print the running controller's status (JSON)
  pause, resume, promote, abort
        send that command to the running controller
  --controller URL  the controller's --listen address  [http://127.0.0.1:8090]
  restart
        restart every pod of a cluster's StatefulSet on Kubernetes, one at
        a time (`tandem rollout restart --help`)
  drain
        cordon a Kubernetes machine and evict its pods, honouring
        PodDisruptionBudgets (`tandem rollout drain --help`)

  -h, --help     this text
";

const ROLLOUT_RUN_USAGE: &str = "\
usage: tandem rollout run --plan FILE [--time-scale K] [--listen ADDR]
                          [--timeline FILE] [--state FILE] [--start CLUSTER=COMMAND]...
                          [--windows FILE] [--consul URL [--consul-service NAME]]
                          [--kubeconfig FILE --kube CLUSTER=CONTEXT[/NAMESPACE/STATEFULSET]]...
                          [--cloudflare-account ID --cloudflare-namespace ID
                           --cloudflare-origin CLUSTER=URL...]

  run a rollout plan (contracts/rollout-plan.md): every metrics.interval,
  read every edge's weights, routes and /metrics and every node's status,
  readiness and chain checkpoints, judge, and set weights on every edge
  (generation-checked writes); progress lines on standard output. Exits 0
  once every phase passed, 1 when it rolled back or could not go on (a
  refused admin token, a refused plan, an unwritable state file)

  --plan FILE       the plan (YAML)
  --time-scale K    divide holds and the baseline window by K (a hold other
                    than 0 at least 5s, the baseline at least 10s)    [1]
  --listen ADDR     serve GET / (status page), GET /status (JSON) and
                    POST /pause|/resume|/promote|/abort  (e.g. 127.0.0.1:8090)
  --timeline FILE   append the timeline (JSONL, one line per decision)
  --state FILE      save the controller's state after every decision; an
                    existing file is resumed (same phase, never forward)
  --windows FILE    append every judging window that closed (JSONL): each
                    cluster's requests, errors and latency histogram, the
                    gates it breached and, for a canary, the comparison
                    with stable (p99s, p-values), to replay a decision
  --start CLUSTER=COMMAND
                    how to start a `start: cold` cluster: a shell command
                    line (sh -c), its output in start-CLUSTER.log beside the
                    state file (or in the current directory); repeatable
  --consul URL      also write the weights to this Consul agent's config
                    entries (service-resolver once, service-splitter on every
                    change; check-and-set), after the edges; ACL token from
                    CONSUL_HTTP_TOKEN
  --consul-service NAME
                    the mesh service the nodes are registered as [tandem-node]
  --kubeconfig FILE the kubeconfig of the --kube contexts (token, client
                    certificate, or an exec credential plugin such as
                    `aws eks get-token`, run once before the rollout starts
                    and again when its token expires or is refused)
  --kube CLUSTER=CONTEXT[/NAMESPACE/STATEFULSET]
                    start this `start: cold` cluster on Kubernetes: scale the
                    StatefulSet [tandem/tandem-node] from 0 to one replica per
                    zone of the plan, wait for readyReplicas; repeatable
  --cloudflare-account ID, --cloudflare-namespace ID
                    also write the Worker's routes to this Workers KV
                    namespace after the edges on every change (API token from
                    CLOUDFLARE_API_TOKEN; KV takes up to 60 s to propagate)
  --cloudflare-origin CLUSTER=URL
                    the origin the Worker sends CLUSTER's share to; one per
                    cluster of the plan
  -h, --help        this text

The edges' admin token is read from TANDEM_EDGE_ADMIN_TOKEN.
";

const ROLLOUT_RESTART_USAGE: &str = "\
usage: tandem rollout restart --kubeconfig FILE --kube CLUSTER=CONTEXT[/NAMESPACE/STATEFULSET]
                              [--wait SECONDS]

  restart every pod of a cluster's StatefulSet [tandem/tandem-node], as
  `kubectl rollout restart` does: the pod template's annotation
  kubectl.kubernetes.io/restartedAt is set to now, and the StatefulSet's
  update strategy replaces its pods one at a time (each node drains on
  SIGTERM; its successor starts from its snapshot). Exits 1 naming the
  cluster and context when the API refuses, or when --wait runs out

  --kubeconfig FILE  the kubeconfig (token, client certificate, or an exec
                     credential plugin, run once before anything is sent)
  --kube CLUSTER=CONTEXT[/NAMESPACE/STATEFULSET]
                     the cluster's name (for messages), its context, and
                     the StatefulSet                    [tandem/tandem-node]
  --wait SECONDS     then wait until every replica runs the new template and
                     is ready (as `kubectl rollout status`), polling every
                     second, and print how long that took
  -h, --help         this text
";

const ROLLOUT_DRAIN_USAGE: &str = "\
usage: tandem rollout drain --kubeconfig FILE --kube CLUSTER=CONTEXT --machine NAME
                            [--timeout SECONDS]

  take a machine (a Kubernetes node) out of service, as `kubectl drain`
  does: cordon it, then evict its pods (DaemonSet pods stay) through the
  eviction API, so PodDisruptionBudgets hold: an eviction a budget refuses
  for now is asked again every second until the timeout. Prints how many
  pods were evicted. Exits 1 naming the cluster and context when the API
  refuses or the timeout runs out (the machine stays cordoned)

  --kubeconfig FILE  the kubeconfig (as for restart)
  --kube CLUSTER=CONTEXT
                     the cluster's name (for messages) and its context
  --machine NAME     the Kubernetes node to drain
  --timeout SECONDS  how long budgets may hold evictions back        [300]
  -h, --help         this text
";

const ROLLOUT_CONTROL_USAGE: &str = "\
usage: tandem rollout status|pause|resume|promote|abort [--controller URL]

  talk to a running `tandem rollout run --listen ADDR`: status prints its
  status (JSON); pause, resume, promote (end the current hold now, gates
  still apply) and abort (roll back now) send that command. Exits 1 when
  the controller cannot be reached or refuses

  --controller URL  the controller's address         [http://127.0.0.1:8090]
  -h, --help        this text
";

const ROLLOUT_CHECK_USAGE: &str = "\
usage: tandem rollout check --plan FILE [--time-scale K]

  check a rollout plan (contracts/rollout-plan.md) and print its summary;
  nothing is started or changed; exits 1 with FILE:LINE:COL: FIELD: message
  on standard error when the plan breaks a rule

  --plan FILE       the plan (YAML; deploy/rollout/seed.yaml is the source's)
  --time-scale K    show holds and the baseline window divided by K (above
                    0), as `run --time-scale K` would use them: a hold other
                    than 0 at least 5s, the baseline at least 10s; gates and
                    breach_for are not scaled                          [1]
  -h, --help        this text
";

const SNAPSHOT_EXPORT_USAGE: &str = "\
usage: tandem snapshot-export --from DATA_DIR --out DIR

  copy the newest snapshot of each partition of a node's data directory,
  with the idempotency window and chain checkpoints saved beside it, into
  DIR (laid out as a data directory: DIR/snapshots-P/), for a new node's
  `[snapshot] seed_from`. Safe on a running node's directory: only
  finished files are taken (the newest snapshot whose window is written),
  each copied under a temporary name, synced and renamed. Prints one line
  per partition; exits 1 when DATA_DIR holds no snapshot, or DIR already
  holds one for a partition.

  --from DATA_DIR  the node's data_dir (holding snapshots-0/, ...)
  --out DIR        where the copies go (created if missing)
  -h, --help       this text
";

fn cmd_snapshot_export(args: &[String]) -> Result<()> {
    use std::path::PathBuf;
    let (mut from, mut out) = (None::<PathBuf>, None::<PathBuf>);
    let mut flags = Flags::new("snapshot-export", SNAPSHOT_EXPORT_USAGE, args);
    while let Some(f) = flags.next_flag() {
        if is_help(&f) {
            print!("{SNAPSHOT_EXPORT_USAGE}");
            return Ok(());
        }
        match f.name {
            "--from" => from = Some(flags.value(&f, "a data directory")?.into()),
            "--out" => out = Some(flags.value(&f, "a directory")?.into()),
            _ => return Err(flags.unknown(&f)),
        }
    }
    let (Some(from), Some(out)) = (from, out) else {
        return Err(flags.error("--from DATA_DIR and --out DIR are required".into()));
    };
    let mut partitions: Vec<(u32, PathBuf)> = std::fs::read_dir(&from)
        .with_context(|| format!("--from {}", from.display()))?
        .filter_map(|e| {
            let e = e.ok()?;
            let p: u32 = e
                .file_name()
                .to_str()?
                .strip_prefix("snapshots-")?
                .parse()
                .ok()?;
            e.path().is_dir().then(|| (p, e.path()))
        })
        .collect();
    partitions.sort();
    let mut exported = 0;
    for (p, src) in &partitions {
        let dest = out.join(format!("snapshots-{p}"));
        let has_own = std::fs::read_dir(&dest).is_ok_and(|mut d| {
            d.any(|e| {
                e.is_ok_and(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with("snapshot-") && n.ends_with(".tsnap"))
                })
            })
        });
        anyhow::ensure!(
            !has_own,
            "{} already holds a snapshot: export into an empty directory",
            dest.display()
        );
        match tandem_node::seed::seed(src, &dest).map_err(anyhow::Error::msg)? {
            Some(s) => {
                exported += 1;
                println!(
                    "snapshots-{p}: seq {} ({}){}",
                    s.seq,
                    s.files.join(", "),
                    if s.without_window {
                        "; no idempotency window beside it: repeated places of earlier orders will be answered 409"
                    } else {
                        ""
                    }
                );
            }
            None => println!("snapshots-{p}: no snapshot"),
        }
    }
    anyhow::ensure!(
        exported > 0,
        "{} holds no snapshot (no snapshots-P/ with a snapshot-*.tsnap)",
        from.display()
    );
    Ok(())
}

const KEYGEN_USAGE: &str = "\
usage: tandem keygen [--scheme ed25519|eip712] [--out FILE]

  make a signing key from the system's random source, write it to a new key
  file (mode 0600; an existing file is never overwritten) and print the
  account it signs for: ed25519:<64 hex> or an Ethereum address 0x<40 hex>
  (docs/signing.md)

  --scheme S   ed25519, or eip712 (secp256k1 over EIP-712 typed data, as
               Ethereum wallets sign)                             [ed25519]
  --out FILE   the key file                                    [tandem.key]
  -h, --help   this text
";

const ORDER_USAGE: &str = "\
usage: tandem order place --key FILE --node URL --market M --id ID --side buy|sell
                          [--type limit|market] [--price P] --qty Q
                          [--tif gtc|ioc|fok] [--post-only] [common flags]
       tandem order cancel --key FILE --node URL --market M --id ID [common flags]
       tandem order amend --key FILE --node URL --market M --id ID
                          [--price P] [--qty Q] [common flags]

  sign one order-entry command with the key file's key (its account is the
  order's account) and send it to a node (POST, DELETE or PATCH
  /v1/orders, contracts/http-api.md); prints the node's answer (JSON) and
  exits 1 unless it is 200

  --key FILE        key file written by `tandem keygen`
  --node URL        the node (or edge): http://host:port
  --market M, --id ID, --side S, --type T, --price P, --qty Q, --tif T,
  --post-only       the command's fields (contracts/match-jsonl.md)
common flags:
  --expires-in SECS the signature's lifetime (x-tandem-expiry = now + SECS;
                    the node refuses more than its signing.max_expiry_secs) [60]
  --chain-id N      the exchange's signing.chain_id                       [1]
  -h, --help        this text
";

const VERIFY_LOG_USAGE: &str = "\
usage: tandem verify-log (--log PATH | --config FILE) [--chain-id N] [--require-signed]

  verify the signature of every signed record of an order log again, as an
  auditor would (docs/signing.md): the command is decoded as the engine
  applied it and its signature checked over it. Prints one JSON line of
  counts; exits 1 naming the first record that fails (its seq: the log's
  seq, or the line number of a JSONL file; on a Kafka log of several
  partitions, the partition too)

  --log PATH        a file log directory (the node's data_dir/log, not in use
                    by a running node: it is locked), or a JSONL file of
                    records
  --config FILE     a node's config: its log as the node opens it (a file
                    log, or every partition of its Kafka topic, with its
                    [log.kafka_properties]; a missing topic is an error,
                    never created), and its signing.chain_id
  --chain-id N      the exchange's signing.chain_id    [1, or the config's]
  --require-signed  a valid command without a signature fails too
  -h, --help        this text
";

/// A command line that cannot be used: the message, and the usage of the
/// command it was meant for (both go to standard error; exit 2).
#[derive(Debug)]
struct UsageError {
    msg: String,
    usage: &'static str,
}

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for UsageError {}

fn usage_error(usage: &'static str, msg: String) -> anyhow::Error {
    UsageError { msg, usage }.into()
}

fn main() {
    let code = match run(std::env::args().skip(1).collect()) {
        Ok(()) => 0,
        // A refused plan is its own message: FILE:LINE:COL: FIELD: message.
        Err(e) if e.is::<tandem_rollout::plan::PlanError>() => {
            eprintln!("{e}");
            1
        }
        Err(e) => match e.downcast_ref::<UsageError>() {
            Some(u) => {
                eprintln!("tandem: {}\n", u.msg);
                eprint!("{}", u.usage);
                2
            }
            None => {
                eprintln!("tandem: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}

fn run(args: Vec<String>) -> Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err(usage_error(USAGE, "no command given".into()));
    };
    match cmd.as_str() {
        "match" => cmd_match(rest),
        "node" => cmd_node(rest),
        "loadgen" => cmd_loadgen(rest),
        "edge" => cmd_edge(rest),
        "rollout" => cmd_rollout(rest),
        "demo" => cmd_demo(rest),
        "keygen" => cmd_keygen(rest),
        "order" => cmd_order(rest),
        "verify-log" => cmd_verify_log(rest),
        "snapshot-export" => cmd_snapshot_export(rest),
        "help" | "--help" | "-h" => {
            let text = match rest.first().map(String::as_str) {
                None => USAGE,
                Some("match") => MATCH_USAGE,
                Some("node") => NODE_USAGE,
                Some("edge") => EDGE_USAGE,
                Some("loadgen") => tandem_loadgen::USAGE,
                Some("rollout") => ROLLOUT_USAGE,
                Some("demo") => tandem_demo::USAGE,
                Some("keygen") => KEYGEN_USAGE,
                Some("order") => ORDER_USAGE,
                Some("verify-log") => VERIFY_LOG_USAGE,
                Some("snapshot-export") => SNAPSHOT_EXPORT_USAGE,
                Some(other) => {
                    return Err(usage_error(USAGE, format!("unknown command {other:?}")))
                }
            };
            print!("{text}");
            Ok(())
        }
        "--version" | "-V" | "version" => {
            println!("tandem {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        other if other.starts_with('-') => {
            Err(usage_error(USAGE, format!("unknown flag {other:?}")))
        }
        other => Err(usage_error(USAGE, format!("unknown command {other:?}"))),
    }
}

/// One flag of a command line: its name and, for `--name=value`, the value.
struct Flag<'a> {
    name: &'a str,
    inline: Option<&'a str>,
}

/// Walks `args` as flags of the command `cmd` (whose usage is `usage`).
struct Flags<'a> {
    cmd: &'static str,
    usage: &'static str,
    it: std::slice::Iter<'a, String>,
}

impl<'a> Flags<'a> {
    fn new(cmd: &'static str, usage: &'static str, args: &'a [String]) -> Self {
        Flags {
            cmd,
            usage,
            it: args.iter(),
        }
    }

    fn next_flag(&mut self) -> Option<Flag<'a>> {
        let a = self.it.next()?;
        Some(match a.split_once('=') {
            Some((name, v)) if name.starts_with("--") => Flag {
                name,
                inline: Some(v),
            },
            _ => Flag {
                name: a,
                inline: None,
            },
        })
    }

    /// The value of `flag`: inline (`--flag=v`) or the next argument.
    fn value(&mut self, flag: &Flag<'a>, what: &str) -> Result<String> {
        match flag.inline {
            Some(v) => Ok(v.to_owned()),
            None => self
                .it
                .next()
                .cloned()
                .ok_or_else(|| self.error(format!("{} needs {what}", flag.name))),
        }
    }

    /// `flag` is not one of this command's (or takes no value).
    fn unknown(&self, flag: &Flag<'_>) -> anyhow::Error {
        match flag.inline {
            Some(_) if flag.name.starts_with("--") => self.error(format!(
                "unknown flag {:?} (or it takes no value)",
                flag.name
            )),
            _ => self.error(format!("unknown flag {:?}", flag.name)),
        }
    }

    fn error(&self, msg: String) -> anyhow::Error {
        usage_error(self.usage, format!("{}: {msg}", self.cmd))
    }
}

/// `--help` or `-h`: the command prints its usage and does nothing else.
fn is_help(flag: &Flag<'_>) -> bool {
    flag.inline.is_none() && matches!(flag.name, "--help" | "-h")
}

fn cmd_keygen(args: &[String]) -> Result<()> {
    use tandem_node::auth::{keys::SecretKey, Scheme};
    let (mut scheme, mut out) = (Scheme::Ed25519, "tandem.key".to_string());
    let mut flags = Flags::new("keygen", KEYGEN_USAGE, args);
    while let Some(f) = flags.next_flag() {
        if is_help(&f) {
            print!("{KEYGEN_USAGE}");
            return Ok(());
        }
        match f.name {
            "--scheme" => {
                scheme = match flags.value(&f, "ed25519 or eip712")?.as_str() {
                    "ed25519" => Scheme::Ed25519,
                    "eip712" => Scheme::Eip712,
                    other => {
                        return Err(flags.error(format!(
                            "--scheme: expected ed25519 or eip712, got {other:?}"
                        )))
                    }
                }
            }
            "--out" => out = flags.value(&f, "a file")?,
            _ => return Err(flags.unknown(&f)),
        }
    }
    let key = SecretKey::generate(scheme).context("read /dev/urandom")?;
    key.write_file(std::path::Path::new(&out))
        .with_context(|| format!("write key file {out}"))?;
    println!("{}", key.account());
    Ok(())
}

fn cmd_order(args: &[String]) -> Result<()> {
    use tandem_node::auth::{client, keys::SecretKey, Policy, SignedOp};
    let Some((sub, rest)) = args.split_first() else {
        return Err(usage_error(
            ORDER_USAGE,
            "order: place, cancel or amend?".into(),
        ));
    };
    let op = match sub.as_str() {
        "place" => SignedOp::Place,
        "cancel" => SignedOp::Cancel,
        "amend" => SignedOp::Amend,
        "--help" | "-h" => {
            print!("{ORDER_USAGE}");
            return Ok(());
        }
        other => {
            return Err(usage_error(
                ORDER_USAGE,
                format!("order: expected place, cancel or amend, got {other:?}"),
            ))
        }
    };
    let (mut key, mut node, mut expires_in, mut chain_id) = (None, None, 60u64, 1u64);
    let mut req = client::OrderRequest::default();
    let mut flags = Flags::new("order", ORDER_USAGE, rest);
    while let Some(f) = flags.next_flag() {
        if is_help(&f) {
            print!("{ORDER_USAGE}");
            return Ok(());
        }
        let place_only = matches!(f.name, "--side" | "--type" | "--tif" | "--post-only");
        if place_only && op != SignedOp::Place
            || matches!(f.name, "--price" | "--qty") && op == SignedOp::Cancel
        {
            return Err(flags.error(format!("{} is not a flag of order {sub}", f.name)));
        }
        match (f.name, f.inline) {
            ("--key", _) => key = Some(flags.value(&f, "a key file")?),
            ("--node", _) => node = Some(flags.value(&f, "a URL")?),
            ("--market", _) => req.market = flags.value(&f, "a market")?,
            ("--id", _) => req.id = flags.value(&f, "an order id")?,
            ("--side", _) => req.side = Some(flags.value(&f, "buy or sell")?),
            ("--type", _) => req.order_type = Some(flags.value(&f, "limit or market")?),
            ("--price", _) => req.price = Some(flags.value(&f, "a decimal")?),
            ("--qty", _) => req.qty = Some(flags.value(&f, "a decimal")?),
            ("--tif", _) => req.tif = Some(flags.value(&f, "gtc, ioc or fok")?),
            ("--post-only", None) => req.post_only = true,
            ("--expires-in", _) => {
                expires_in = flags
                    .value(&f, "seconds")?
                    .parse()
                    .map_err(|_| flags.error("--expires-in: expected seconds".into()))?
            }
            ("--chain-id", _) => {
                chain_id = flags
                    .value(&f, "a number")?
                    .parse()
                    .map_err(|_| flags.error("--chain-id: expected a number".into()))?
            }
            _ => return Err(flags.unknown(&f)),
        }
    }
    let (Some(key), Some(node)) = (key, node) else {
        return Err(flags.error("--key and --node are required".into()));
    };
    if req.market.is_empty() || req.id.is_empty() {
        return Err(flags.error("--market and --id are required".into()));
    }
    let key = SecretKey::read_file(std::path::Path::new(&key))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let policy = Policy::new(chain_id, 0, 0);
    let (status, body) = client::sign_and_send(&node, op, &req, &key, now + expires_in, &policy)
        .with_context(|| format!("order {sub}"))?;
    println!("{body}");
    anyhow::ensure!(status == 200, "order {sub}: the node answered {status}");
    Ok(())
}

fn cmd_verify_log(args: &[String]) -> Result<()> {
    use tandem_node::auth::{audit, Policy};
    let (mut log, mut config, mut chain_id, mut require_signed) = (None, None, None, false);
    let mut flags = Flags::new("verify-log", VERIFY_LOG_USAGE, args);
    while let Some(f) = flags.next_flag() {
        if is_help(&f) {
            print!("{VERIFY_LOG_USAGE}");
            return Ok(());
        }
        match (f.name, f.inline) {
            ("--log", _) => log = Some(flags.value(&f, "a path")?),
            ("--config", _) => config = Some(flags.value(&f, "a file")?),
            ("--chain-id", _) => {
                chain_id = Some(
                    flags
                        .value(&f, "a number")?
                        .parse::<u64>()
                        .map_err(|_| flags.error("--chain-id: expected a number".into()))?,
                )
            }
            ("--require-signed", None) => require_signed = true,
            _ => return Err(flags.unknown(&f)),
        }
    }
    let (report, log) = match (log, config) {
        (Some(log), None) => {
            let policy = Policy::new(chain_id.unwrap_or(1), 0, 0);
            let r = audit::verify_path(std::path::Path::new(&log), &policy, require_signed)
                .context("verify-log")?;
            (r, log)
        }
        (None, Some(file)) => {
            // As `tandem node` reads it (TANDEM_* variables included).
            let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
            let cfg = tandem_node::NodeConfig::load(Some(std::path::Path::new(&file)), &env)
                .context("verify-log")?;
            let policy = Policy::new(chain_id.unwrap_or(cfg.signing.chain_id), 0, 0);
            let logs = tandem_node::node::open_logs_to_read(&cfg)
                .with_context(|| format!("verify-log: the log of {file}"))?;
            let r = audit::verify_logs(logs, &policy, require_signed);
            (r, format!("the log of {file}"))
        }
        _ => return Err(flags.error("give --log PATH or --config FILE (one of them)".into())),
    };
    println!("{}", report.to_json());
    match report.first_bad {
        None => Ok(()),
        Some((seq, why)) => anyhow::bail!("verify-log: record {seq} of {log}: {why}"),
    }
}

fn cmd_demo(args: &[String]) -> Result<()> {
    match tandem_demo::run_cli(args) {
        Ok(true) => Ok(()),
        Ok(false) => {
            anyhow::bail!("demo: a scenario did not end as it must (its problems are above)")
        }
        Err(e) => match e.downcast::<tandem_demo::UsageError>() {
            Ok(u) => Err(usage_error(tandem_demo::USAGE, format!("demo: {u}"))),
            Err(e) => Err(e),
        },
    }
}

fn cmd_loadgen(args: &[String]) -> Result<()> {
    tandem_loadgen::run_cli(args).map_err(|e| match e.downcast::<tandem_loadgen::FlagError>() {
        Ok(f) => usage_error(tandem_loadgen::USAGE, format!("loadgen: {f}")),
        Err(e) => e,
    })
}

fn cmd_node(args: &[String]) -> Result<()> {
    let mut config = None;
    let mut flags = Flags::new("node", NODE_USAGE, args);
    while let Some(f) = flags.next_flag() {
        if is_help(&f) {
            print!("{NODE_USAGE}");
            return Ok(());
        }
        match f.name {
            "--config" => config = Some(flags.value(&f, "a file")?),
            _ => return Err(flags.unknown(&f)),
        }
    }
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let cfg = tandem_node::NodeConfig::load(config.as_deref().map(std::path::Path::new), &env)
        .context("node config")?;
    tandem_node::run(cfg)
}

fn cmd_edge(args: &[String]) -> Result<()> {
    let mut config = None;
    let mut flags = Flags::new("edge", EDGE_USAGE, args);
    while let Some(f) = flags.next_flag() {
        if is_help(&f) {
            print!("{EDGE_USAGE}");
            return Ok(());
        }
        match f.name {
            "--config" => config = Some(flags.value(&f, "a file")?),
            _ => return Err(flags.unknown(&f)),
        }
    }
    let path = config.map(std::path::PathBuf::from);
    let cfg = tandem_edge::EdgeConfig::load(path.as_deref()).context("edge config")?;
    tandem_edge::run(cfg, path)
}

fn cmd_match(args: &[String]) -> Result<()> {
    let (mut input, mut output, mut chain) = (None, None, false);
    let mut flags = Flags::new("match", MATCH_USAGE, args);
    while let Some(f) = flags.next_flag() {
        if is_help(&f) {
            print!("{MATCH_USAGE}");
            return Ok(());
        }
        match (f.name, f.inline) {
            ("--input", _) => input = Some(flags.value(&f, "a file")?),
            ("--output", _) => output = Some(flags.value(&f, "a file")?),
            ("--chain", None) => chain = true,
            _ => return Err(flags.unknown(&f)),
        }
    }
    let reader: Box<dyn io::BufRead + Send> = match &input {
        Some(p) => Box::new(BufReader::with_capacity(
            1 << 16,
            File::open(p).with_context(|| format!("open input {p}"))?,
        )),
        None => Box::new(BufReader::with_capacity(1 << 16, io::stdin())),
    };
    let writer: Box<dyn Write> = match &output {
        Some(p) => Box::new(File::create(p).with_context(|| format!("create output {p}"))?),
        None => Box::new(io::stdout().lock()),
    };
    let eng = match tandem_codec::run_match(
        reader,
        BufWriter::with_capacity(1 << 16, writer),
        Default::default(),
    ) {
        Ok(eng) => eng,
        // A closed stdout (e.g. `| head`) ends the job quietly.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(e).context("match"),
    };
    if chain {
        eprintln!(
            "seq={} chain={} markets={} live_orders={}",
            eng.seq(),
            tandem_core::chain_hex(eng.chain()),
            eng.market_count(),
            eng.live_orders()
        );
    }
    Ok(())
}

fn cmd_rollout(args: &[String]) -> Result<()> {
    let Some((sub, rest)) = args.split_first() else {
        return Err(usage_error(
            ROLLOUT_USAGE,
            "rollout: no subcommand given".into(),
        ));
    };
    match sub.as_str() {
        "--help" | "-h" | "help" => {
            print!("{ROLLOUT_USAGE}");
            Ok(())
        }
        "check" => cmd_rollout_check(rest),
        "run" => cmd_rollout_run(rest),
        "status" => cmd_rollout_control(rest, None),
        "restart" => cmd_rollout_kube(rest, KubeOp::Restart),
        "drain" => cmd_rollout_kube(rest, KubeOp::Drain),
        "pause" => cmd_rollout_control(rest, Some(Command::Pause)),
        "resume" => cmd_rollout_control(rest, Some(Command::Resume)),
        "promote" => cmd_rollout_control(rest, Some(Command::Promote)),
        "abort" => cmd_rollout_control(rest, Some(Command::Abort)),
        other if other.starts_with('-') => Err(usage_error(
            ROLLOUT_USAGE,
            format!("rollout: unknown flag {other:?}"),
        )),
        other => Err(usage_error(
            ROLLOUT_USAGE,
            format!("rollout: unknown subcommand {other:?}"),
        )),
    }
}

fn time_scale<'a>(flags: &mut Flags<'a>, f: &Flag<'a>) -> Result<f64> {
    let v = flags.value(f, "a number above 0")?;
    v.parse::<f64>()
        .map_err(|_| format!("time scale must be a number above 0, not {v:?}"))
        .and_then(tandem_rollout::plan::check_time_scale)
        .map_err(|m| flags.error(format!("--time-scale: {m}")))
}

fn cmd_rollout_run(args: &[String]) -> Result<()> {
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    let (mut plan, mut scale, mut listen) = (None, None, None);
    let (mut timeline, mut state, mut windows) = (None, None, None);
    let mut starts: BTreeMap<String, String> = BTreeMap::new();
    let (mut consul, mut consul_service) = (None, "tandem-node".to_owned());
    let (mut kubeconfig, mut kube) = (None, Vec::new());
    let (mut cf_account, mut cf_namespace) = (None, None);
    let mut cf_origins: BTreeMap<String, String> = BTreeMap::new();
    let mut flags = Flags::new("rollout run", ROLLOUT_RUN_USAGE, args);
    while let Some(f) = flags.next_flag() {
        if is_help(&f) {
            print!("{ROLLOUT_RUN_USAGE}");
            return Ok(());
        }
        match f.name {
            "--plan" => plan = Some(flags.value(&f, "a file")?),
            "--time-scale" => scale = Some(time_scale(&mut flags, &f)?),
            "--listen" => {
                let v = flags.value(&f, "an address")?;
                let addr: std::net::SocketAddr = v.parse().map_err(|_| {
                    flags.error(format!(
                        "--listen: {v:?} is not an address like 127.0.0.1:8090"
                    ))
                })?;
                listen = Some(addr);
            }
            "--timeline" => timeline = Some(PathBuf::from(flags.value(&f, "a file")?)),
            "--windows" => windows = Some(PathBuf::from(flags.value(&f, "a file")?)),
            "--consul" => {
                let v = flags.value(&f, "a URL")?;
                if !v.starts_with("http://") {
                    return Err(flags.error(format!(
                        "--consul: {v:?} is not an agent URL like http://127.0.0.1:8500"
                    )));
                }
                consul = Some(v);
            }
            "--consul-service" => consul_service = flags.value(&f, "a service name")?,
            "--state" => state = Some(PathBuf::from(flags.value(&f, "a file")?)),
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(flags.value(&f, "a file")?)),
            "--kube" => {
                let v = flags.value(&f, "CLUSTER=CONTEXT[/NAMESPACE/STATEFULSET]")?;
                let t = tandem_rollout::kube_actuator::KubeTarget::parse(&v)
                    .map_err(|m| flags.error(format!("--kube: {m}")))?;
                kube.push(t);
            }
            "--cloudflare-account" => cf_account = Some(flags.value(&f, "an account id")?),
            "--cloudflare-namespace" => cf_namespace = Some(flags.value(&f, "a namespace id")?),
            "--cloudflare-origin" => {
                let v = flags.value(&f, "CLUSTER=URL")?;
                match v.split_once('=') {
                    Some((c, u))
                        if !c.is_empty()
                            && (u.starts_with("https://") || u.starts_with("http://")) =>
                    {
                        if cf_origins.insert(c.to_owned(), u.to_owned()).is_some() {
                            return Err(flags
                                .error(format!("--cloudflare-origin: cluster {c} given twice")));
                        }
                    }
                    _ => {
                        return Err(flags.error(format!(
                            "--cloudflare-origin: {v:?} is not CLUSTER=URL (http:// or https://)"
                        )))
                    }
                }
            }
            "--start" => {
                let v = flags.value(&f, "CLUSTER=COMMAND")?;
                match v.split_once('=') {
                    Some((c, cmd)) if !c.is_empty() && !cmd.trim().is_empty() => {
                        if starts.insert(c.to_owned(), cmd.to_owned()).is_some() {
                            return Err(flags.error(format!("--start: cluster {c} given twice")));
                        }
                    }
                    _ => return Err(flags.error(format!("--start: {v:?} is not CLUSTER=COMMAND"))),
                }
            }
            _ => return Err(flags.unknown(&f)),
        }
    }
    let Some(path) = plan else {
        return Err(flags.error("--plan FILE is required".into()));
    };
    let mut loaded = tandem_rollout::plan::Plan::load(std::path::Path::new(&path))?;
    if let Some(k) = scale {
        loaded = loaded.scaled(k);
    }
    for c in starts.keys() {
        if !loaded.clusters.iter().any(|x| &x.name == c) {
            return Err(flags.error(format!("--start: {c} is not a cluster of the plan")));
        }
    }
    let request_timeout = std::time::Duration::from_secs(2);
    // Kubernetes: every context read and checked before anything starts.
    let mut kube_clusters = Vec::new();
    let mut kube_seen = std::collections::BTreeSet::new();
    for t in &kube {
        let Some(c) = loaded.clusters.iter().find(|x| x.name == t.cluster) else {
            return Err(flags.error(format!(
                "--kube: {} is not a cluster of the plan",
                t.cluster
            )));
        };
        if c.start != tandem_rollout::plan::Start::Cold {
            return Err(flags.error(format!(
                "--kube: {} is not `start: cold` in the plan (the controller starts only cold clusters)",
                t.cluster
            )));
        }
        if starts.contains_key(&t.cluster) || !kube_seen.insert(t.cluster.clone()) {
            return Err(flags.error(format!("--kube: {} is started another way too", t.cluster)));
        }
        let Some(file) = &kubeconfig else {
            return Err(flags.error("--kube needs --kubeconfig FILE".into()));
        };
        let k = tandem_rollout::kube_actuator::KubeCluster::load(file, t, request_timeout)?;
        if let Some(plugin) = k.exec() {
            // A credential plugin is run once now: a missing plugin or an
            // expired login is found before the rollout starts.
            plugin
                .prime()
                .with_context(|| format!("--kube {}: context {}", t.cluster, t.context))?;
        }
        kube_clusters.push((k, c.zones.len().max(1) as u32));
    }
    let cloudflare = match (cf_account, cf_namespace) {
        (None, None) if cf_origins.is_empty() => None,
        (Some(account_id), Some(namespace_id)) => {
            for c in cf_origins.keys() {
                if !loaded.clusters.iter().any(|x| &x.name == c) {
                    return Err(flags.error(format!(
                        "--cloudflare-origin: {c} is not a cluster of the plan"
                    )));
                }
            }
            if let Some(c) = loaded
                .clusters
                .iter()
                .find(|c| !cf_origins.contains_key(&c.name))
            {
                return Err(
                    flags.error(format!("--cloudflare-origin: none for cluster {}", c.name))
                );
            }
            let token = std::env::var("CLOUDFLARE_API_TOKEN").unwrap_or_default();
            if token.is_empty() {
                anyhow::bail!("rollout run: --cloudflare-account needs CLOUDFLARE_API_TOKEN (an API token with Workers KV Storage write)");
            }
            Some(tandem_rollout::layers::CloudflareTarget {
                kv: tandem_rollout::cloudflare::KvTarget {
                    account_id,
                    namespace_id,
                    origins: cf_origins,
                },
                token,
                api: tandem_rollout::cloudflare::API.to_owned(),
                roots: tandem_rollout::https::Roots::System,
            })
        }
        _ => {
            return Err(flags.error(
                "--cloudflare-account, --cloudflare-namespace and --cloudflare-origin go together"
                    .into(),
            ))
        }
    };
    let prepare_ms = tandem_rollout::decide::Limits::for_plan(&loaded).prepare_ms;
    let token = std::env::var("TANDEM_EDGE_ADMIN_TOKEN").unwrap_or_default();
    if token.is_empty() {
        anyhow::bail!("rollout run: TANDEM_EDGE_ADMIN_TOKEN is not set (the edges' admin token)");
    }
    let listener = match listen {
        Some(a) => Some(std::net::TcpListener::bind(a).with_context(|| format!("listen on {a}"))?),
        None => None,
    };
    let log_dir = state
        .as_ref()
        .and_then(|p: &PathBuf| p.parent().map(|d| d.to_path_buf()))
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let cfg = tandem_rollout::run::RunConfig {
        plan: loaded,
        token,
        listen: listener,
        timeline,
        state,
        windows,
        starter: {
            let local = Box::new(tandem_rollout::run::LocalProcesses::new(starts, log_dir));
            if kube_clusters.is_empty() {
                local
            } else {
                Box::new(tandem_rollout::kube_actuator::KubeStarter::new(
                    kube_clusters,
                    local,
                    std::time::Duration::from_millis(prepare_ms),
                    std::time::Duration::from_secs(1),
                ))
            }
        },
        progress: true,
        request_timeout,
        consul: consul.map(|agent| tandem_rollout::layers::ConsulTarget {
            agent,
            token: std::env::var("CONSUL_HTTP_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
            service: consul_service,
        }),
        cloudflare,
    };
    let done = tandem_rollout::run::run_blocking(cfg).context("rollout run")?;
    match &done.state.stage {
        tandem_rollout::decide::Stage::Done => Ok(()),
        tandem_rollout::decide::Stage::RolledBack { reason } => {
            anyhow::bail!("rollout run: rolled back: {reason}")
        }
        other => anyhow::bail!("rollout run: stopped at {other:?}"),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum KubeOp {
    Restart,
    Drain,
}

fn seconds<'a>(flags: &mut Flags<'a>, f: &Flag<'a>) -> Result<std::time::Duration> {
    let v = flags.value(f, "a number of seconds")?;
    match v.parse::<u64>() {
        Ok(n) if (1..=86_400).contains(&n) => Ok(std::time::Duration::from_secs(n)),
        _ => Err(flags.error(format!(
            "{}: {v:?} is not a whole number of seconds from 1 to 86400",
            f.name
        ))),
    }
}

/// `tandem rollout restart` and `tandem rollout drain`.
fn cmd_rollout_kube(args: &[String], op: KubeOp) -> Result<()> {
    use std::time::Duration;
    use tandem_rollout::kube_actuator::{self, KubeCluster, KubeTarget};
    let (name, usage) = match op {
        KubeOp::Restart => ("rollout restart", ROLLOUT_RESTART_USAGE),
        KubeOp::Drain => ("rollout drain", ROLLOUT_DRAIN_USAGE),
    };
    let (mut kubeconfig, mut kube, mut machine) = (None, None, None);
    let (mut wait, mut timeout) = (None, Duration::from_secs(300));
    let mut flags = Flags::new(name, usage, args);
    while let Some(f) = flags.next_flag() {
        if is_help(&f) {
            print!("{usage}");
            return Ok(());
        }
        match (f.name, op) {
            ("--kubeconfig", _) => {
                kubeconfig = Some(std::path::PathBuf::from(flags.value(&f, "a file")?))
            }
            ("--kube", _) => {
                let v = flags.value(&f, "CLUSTER=CONTEXT[/NAMESPACE/STATEFULSET]")?;
                let t = KubeTarget::parse(&v).map_err(|m| flags.error(format!("--kube: {m}")))?;
                if op == KubeOp::Drain && t.statefulset.is_some() {
                    return Err(flags.error(format!(
                        "--kube: {v:?}: a drain takes CLUSTER=CONTEXT (it is about a machine, not a StatefulSet)"
                    )));
                }
                kube = Some(t);
            }
            ("--wait", KubeOp::Restart) => wait = Some(seconds(&mut flags, &f)?),
            ("--machine", KubeOp::Drain) => {
                let v = flags.value(&f, "a Kubernetes node name")?;
                tandem_rollout::kubernetes::check_name("machine", &v)
                    .map_err(|e| flags.error(format!("--machine: {e}")))?;
                machine = Some(v);
            }
            ("--timeout", KubeOp::Drain) => timeout = seconds(&mut flags, &f)?,
            _ => return Err(flags.unknown(&f)),
        }
    }
    let Some(file) = kubeconfig else {
        return Err(flags.error("--kubeconfig FILE is required".into()));
    };
    let Some(target) = kube else {
        return Err(flags.error("--kube CLUSTER=CONTEXT is required".into()));
    };
    if op == KubeOp::Drain && machine.is_none() {
        return Err(flags.error("--machine NAME is required".into()));
    }
    let k = KubeCluster::load(&file, &target, Duration::from_secs(10))?;
    let at = format!("--kube {}: context {}", target.cluster, target.context);
    if let Some(plugin) = k.exec() {
        plugin.prime().with_context(|| at.clone())?;
    }
    let every = Duration::from_secs(1);
    match (op, machine) {
        (KubeOp::Drain, Some(m)) => {
            let t0 = std::time::Instant::now();
            let n = kube_actuator::drain_blocking(&k, &m, timeout, every)?;
            println!(
                "drained machine {m} ({at}): {n} pods evicted in {:.1} s",
                t0.elapsed().as_secs_f64()
            );
        }
        _ => {
            let now = tandem_rollout::exec_credential::format_rfc3339(std::time::SystemTime::now());
            match kube_actuator::restart_blocking(&k, &now, wait, every)? {
                Some(took) => println!(
                    "restarted ({at}, restartedAt {now}): every replica updated and ready after {:.1} s",
                    took.as_secs_f64()
                ),
                None => println!(
                    "restart requested ({at}, restartedAt {now}); `tandem rollout restart --wait SECONDS` waits for it"
                ),
            }
        }
    }
    Ok(())
}

fn cmd_rollout_control(args: &[String], command: Option<Command>) -> Result<()> {
    let mut url = tandem_rollout::status::DEFAULT_CONTROLLER.to_owned();
    let name = match command {
        None => "rollout status",
        Some(Command::Pause) => "rollout pause",
        Some(Command::Resume) => "rollout resume",
        Some(Command::Promote) => "rollout promote",
        Some(Command::Abort) => "rollout abort",
    };
    let mut flags = Flags::new(name, ROLLOUT_CONTROL_USAGE, args);
    while let Some(f) = flags.next_flag() {
        if is_help(&f) {
            print!("{ROLLOUT_CONTROL_USAGE}");
            return Ok(());
        }
        match f.name {
            "--controller" => url = flags.value(&f, "a URL")?,
            _ => return Err(flags.unknown(&f)),
        }
    }
    let body = tandem_rollout::run::control_blocking(&url, command).context(name)?;
    println!("{body}");
    Ok(())
}

fn cmd_rollout_check(args: &[String]) -> Result<()> {
    let (mut plan, mut scale) = (None, None);
    let mut flags = Flags::new("rollout check", ROLLOUT_CHECK_USAGE, args);
    while let Some(f) = flags.next_flag() {
        if is_help(&f) {
            print!("{ROLLOUT_CHECK_USAGE}");
            return Ok(());
        }
        match f.name {
            "--plan" => plan = Some(flags.value(&f, "a file")?),
            "--time-scale" => {
                let v = flags.value(&f, "a number above 0")?;
                let k = v
                    .parse::<f64>()
                    .map_err(|_| format!("time scale must be a number above 0, not {v:?}"))
                    .and_then(tandem_rollout::plan::check_time_scale)
                    .map_err(|m| flags.error(format!("--time-scale: {m}")))?;
                scale = Some(k);
            }
            _ => return Err(flags.unknown(&f)),
        }
    }
    let Some(path) = plan else {
        return Err(flags.error("--plan FILE is required".into()));
    };
    let loaded = tandem_rollout::plan::Plan::load(std::path::Path::new(&path))?;
    let mut out = format!("plan {path}: ok\n");
    let shown = match scale {
        Some(k) => {
            out.push_str(&format!(
                "time scale: {k} (holds and the baseline window divided by {k}; a hold other than 0 at least 5s, the baseline at least 10s)\n"
            ));
            loaded.scaled(k)
        }
        None => loaded,
    };
    out.push_str(&shown.summary());
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e).context("write the summary"),
        _ => Ok(()),
    }
}
