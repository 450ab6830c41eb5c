//! The `tandem loadgen` command: flags to a [`LoadgenConfig`], run, print
//! the report, write it as JSON, and fail when the verifier found lost,
//! duplicated or inconsistent orders.

use anyhow::{bail, Context, Result};

use crate::config::LoadgenConfig;

/// Flags of `tandem loadgen`.
pub const USAGE: &str = "\
usage: tandem loadgen [flags]

  open-loop load at a fixed rate; latency counts from each request's
  intended send time (no coordinated omission)

  --target URL         node address, http://host:port; repeat or comma-
                       separate for several (round-robin; a retry goes to the
                       next)                       [http://127.0.0.1:8080]
  --rate N             requests per second                          [1000]
  --duration S         measured seconds                               [10]
  --warmup S           seconds sent first and not counted              [2]
  --connections N      connections in total                           [32]
  --http2              HTTP/2 (cleartext, prior knowledge); else HTTP/1.1
  --max-in-flight N    requests in flight at most; a request that must wait
                       for a slot counts under backpressure and its latency
                       still counts from its intended time
                                [connections; 64 x connections with --http2]
  --accounts N         accounts                                     [1000]
  --markets N          markets (MKT0..)                               [10]
  --read-ratio F       share of reads (GET order / GET book)           [0]
  --cancel-ratio F     share of non-reads that cancel our orders     [0.2]
  --market-ratio F     share of places that are market orders       [0.05]
  --ioc-ratio F        share of limit places that are ioc            [0.1]
  --post-only-ratio F  share of limit places that are post-only      [0.1]
  --seed N             seed of the operation sequence                  [1]
  --id-prefix P        order ids are P-<n>                      [lg<seed>]
  --retries N          retries on connection error or 429/502/503      [3]
  --backoff-ms N       first retry backoff (doubling, capped at 100)   [5]
  --timeout-ms N       timeout of one attempt                       [5000]
  --verify[=BOOL]      read back every accepted order after the run [true]
  --no-verify          same as --verify=false
  --verify-rate N      read-backs started per second after the run, so they
                       do not land as one burst (0: no bound)           [0]
  --replay-ratio F     share of acknowledged places replayed after the run
                       to check idempotence (retried ones always)   [0.05]
  --floor              send only GET /healthz (the server stack's floor)
  --path P             send only GET P
  --threads N          runtime worker threads           [cores, at most 4]
  --json FILE          write the report as JSON
  --samples FILE       write one CSV line per measured request at the end:
                       t_ms,latency_us,op,outcome,status,cluster,attempts
                       (t_ms is the intended send time, Unix ms; cluster is
                       the answer's x-tandem-cluster); kept in memory until
                       then, 16 bytes a request, at most 50000000 requests
  --sign SCHEME        sign every place and cancel (docs/signing.md) with
                       one key per account: ed25519 or eip712; the keys are
                       derived from --seed before the run, each request is
                       signed when built (client cost, in the latency)
  --sign-chain-id N    chain id to sign for (the nodes' signing.chain_id) [1]
  --sign-expiry S      signature lifetime in seconds                    [60]
  --grpc-stream        closed loop over the node's gRPC Submit stream
                       instead of the HTTP schedule: --connections streams
                       (one HTTP/2 connection each), each keeping
                       --in-flight requests in flight for warmup + duration;
                       --rate is not used; latency counts from each send;
                       places and cancels only (no reads, --floor, --path,
                       --samples); verified over HTTP as in HTTP mode
  --in-flight K        requests in flight per stream                   [128]
  -h, --help           this text

exits non-zero if the verifier finds lost, duplicated or inconsistent orders
";

/// The flags given cannot run (unknown flag, missing or bad value, a value
/// out of its limits): the caller prints [`USAGE`] to standard error and
/// exits 2. `run_cli` returns it inside its `anyhow::Error`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FlagError(pub String);

/// Parses `args` (the flags after `loadgen`), runs, prints the report to
/// standard output, writes `--json`, and returns an error if the verifier
/// found lost, duplicated or inconsistent orders. A flag that cannot be
/// used is a [`FlagError`] (downcast the error to tell it from a failed
/// run); `--help` or `-h` prints [`USAGE`] and returns `Ok`.
pub fn run_cli(args: &[String]) -> Result<()> {
    let parsed = parse(args).map_err(|e| FlagError(format!("{e:#}")))?;
    let Some((cfg, json)) = parsed else {
        print!("{USAGE}");
        return Ok(());
    };
    let report = crate::run(&cfg).context("loadgen")?;
    print!("{report}");
    if let Some(path) = json {
        std::fs::write(&path, report.to_json() + "\n")
            .with_context(|| format!("write report {path}"))?;
    }
    if let Some(v) = &report.verify {
        if v.lost + v.duplicated + v.inconsistent > 0 {
            bail!(
                "verification failed: lost {}, duplicated {}, inconsistent {}",
                v.lost,
                v.duplicated,
                v.inconsistent
            );
        }
    }
    Ok(())
}

/// The configuration and `--json` path of `args`; `None` for `--help`.
fn parse(args: &[String]) -> Result<Option<(LoadgenConfig, Option<String>)>> {
    let mut cfg = LoadgenConfig::default();
    let mut targets: Vec<String> = Vec::new();
    let mut json = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value")),
            }
        };
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> Result<T>
        where
            T::Err: std::error::Error + Send + Sync + 'static,
        {
            v.parse::<T>().with_context(|| format!("{flag} {v:?}"))
        }
        match flag {
            "--help" | "-h" => return Ok(None),
            "--target" => targets.extend(
                value()?
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            "--rate" => cfg.rate = num(flag, value()?)?,
            "--duration" => cfg.duration_s = num(flag, value()?)?,
            "--warmup" => cfg.warmup_s = num(flag, value()?)?,
            "--connections" => cfg.connections = num(flag, value()?)?,
            "--http2" => cfg.http2 = true,
            "--max-in-flight" => cfg.max_in_flight = Some(num(flag, value()?)?),
            "--accounts" => cfg.accounts = num(flag, value()?)?,
            "--markets" => cfg.markets = num(flag, value()?)?,
            "--read-ratio" => cfg.read_ratio = num(flag, value()?)?,
            "--cancel-ratio" => cfg.cancel_ratio = num(flag, value()?)?,
            "--market-ratio" => cfg.market_ratio = num(flag, value()?)?,
            "--ioc-ratio" => cfg.ioc_ratio = num(flag, value()?)?,
            "--post-only-ratio" => cfg.post_only_ratio = num(flag, value()?)?,
            "--seed" => cfg.seed = num(flag, value()?)?,
            "--id-prefix" => cfg.id_prefix = Some(value()?),
            "--retries" => cfg.retries = num(flag, value()?)?,
            "--backoff-ms" => cfg.retry_backoff_ms = num(flag, value()?)?,
            "--timeout-ms" => cfg.timeout_ms = num(flag, value()?)?,
            "--verify" => {
                cfg.verify = match inline.as_deref() {
                    None => true,
                    Some(v) => num(flag, v.to_owned())?,
                }
            }
            "--no-verify" => cfg.verify = false,
            "--verify-rate" => cfg.verify_rate = num(flag, value()?)?,
            "--replay-ratio" => cfg.replay_ratio = num(flag, value()?)?,
            "--floor" => cfg.floor = true,
            "--path" => cfg.path = Some(value()?),
            "--threads" => cfg.threads = num(flag, value()?)?,
            "--json" => json = Some(value()?),
            "--samples" => cfg.samples = Some(value()?.into()),
            "--sign" => cfg.sign = Some(value()?),
            "--sign-chain-id" => cfg.sign_chain_id = num(flag, value()?)?,
            "--sign-expiry" => cfg.sign_expiry_s = num(flag, value()?)?,
            "--grpc-stream" => cfg.grpc_stream = true,
            "--in-flight" => cfg.stream_in_flight = num(flag, value()?)?,
            other => bail!("unknown flag {other:?} (see --help)"),
        }
    }
    if !targets.is_empty() {
        cfg.targets = targets;
    }
    cfg.validate().context("flags")?;
    Ok(Some((cfg, json)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn flags() {
        let (cfg, json) = parse(&args(
            "--target http://a:1,http://b:2 --target=http://c:3 --rate 500 --duration 2 \
             --warmup=0.5 --http2 --no-verify --floor --json out.json --seed 9 \
             --samples s.csv",
        ))
        .unwrap()
        .unwrap();
        assert_eq!(cfg.targets, ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!((cfg.rate, cfg.duration_s, cfg.warmup_s), (500.0, 2.0, 0.5));
        assert!(cfg.http2 && !cfg.verify && cfg.floor);
        assert_eq!(cfg.seed, 9);
        assert_eq!(cfg.fixed_path().as_deref(), Some("/healthz"));
        assert_eq!(json.as_deref(), Some("out.json"));
        assert_eq!(cfg.samples.as_deref(), Some(std::path::Path::new("s.csv")));
        assert_eq!(parse(&args("")).unwrap().unwrap().0.samples, None);
        assert!(parse(&args("--samples")).is_err());
        assert!(parse(&args("--samples=")).is_err());
        assert_eq!(cfg.in_flight_bound(), 32 * 64);
        assert!(parse(&args("--help")).unwrap().is_none());
        assert!(parse(&args("--rate")).is_err());
        assert!(parse(&args("--rate x")).is_err());
        assert!(parse(&args("--rate 0")).is_err());
        assert!(parse(&args("--bogus")).is_err());
        assert!(parse(&args("--read-ratio 2")).is_err());
        let (cfg, _) = parse(&args("--verify=false")).unwrap().unwrap();
        assert!(!cfg.verify);
        let (cfg, _) = parse(&args("--sign eip712 --sign-chain-id 5 --sign-expiry 30"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (cfg.sign.as_deref(), cfg.sign_chain_id, cfg.sign_expiry_s),
            (Some("eip712"), 5, 30)
        );
        assert!(parse(&args("--sign rsa")).is_err());
        let (cfg, _) = parse(&args("--grpc-stream --connections 4 --in-flight 256"))
            .unwrap()
            .unwrap();
        assert!(cfg.grpc_stream);
        assert_eq!((cfg.stream_in_flight, cfg.in_flight_bound()), (256, 1024));
        assert!(parse(&args("--grpc-stream --read-ratio 0.1")).is_err());
        assert!(parse(&args("--grpc-stream --floor")).is_err());
        assert!(parse(&args("--grpc-stream --in-flight 0")).is_err());
        assert!(parse(&args("--grpc-stream --max-in-flight 5")).is_err());
    }

    #[test]
    fn usage_states_the_samples_cap() {
        // The cap is written out in USAGE; keep it in step with the limit.
        let line = USAGE
            .lines()
            .skip_while(|l| !l.contains("--samples"))
            .take(5)
            .collect::<String>();
        assert!(line.contains(&crate::MAX_REQUESTS.to_string()), "{line}");
    }
}
