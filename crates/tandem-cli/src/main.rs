//! `tandem`: the one binary. It parses flags and calls library code; no
//! logic of its own lives here.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
usage: tandem <command> [flags]

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
        from intended send time, order-flow verification (lost/duplicated);
        `tandem loadgen --help` for its flags
  help  this text

benchmarks are a separate program: cargo run --release -p tandem-bench -- core
";

fn main() {
    if let Err(e) = run(std::env::args().skip(1).collect()) {
        eprintln!("tandem: {e:#}");
        std::process::exit(2);
    }
}

fn run(args: Vec<String>) -> Result<()> {
    let Some((cmd, rest)) = args.split_first() else {
        eprint!("{USAGE}");
        bail!("no command given");
    };
    match cmd.as_str() {
        "match" => cmd_match(rest),
        "node" => cmd_node(rest),
        "loadgen" => tandem_loadgen::run_cli(rest),
        "edge" => cmd_edge(rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command {other:?}")
        }
    }
}

fn cmd_node(args: &[String]) -> Result<()> {
    let mut config = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = Some(it.next().context("--config needs a file")?.clone()),
            other => bail!("node: unknown flag {other:?}"),
        }
    }
    let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    let cfg = tandem_node::NodeConfig::load(config.as_deref().map(std::path::Path::new), &env)
        .context("node config")?;
    tandem_node::run(cfg)
}

fn cmd_edge(args: &[String]) -> Result<()> {
    let mut config = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = Some(it.next().context("--config needs a file")?.clone()),
            other => bail!("edge: unknown flag {other:?}"),
        }
    }
    let path = config.map(std::path::PathBuf::from);
    let cfg = tandem_edge::EdgeConfig::load(path.as_deref()).context("edge config")?;
    tandem_edge::run(cfg, path)
}

fn cmd_match(args: &[String]) -> Result<()> {
    let (mut input, mut output, mut chain) = (None, None, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--input" => input = Some(it.next().context("--input needs a file")?.clone()),
            "--output" => output = Some(it.next().context("--output needs a file")?.clone()),
            "--chain" => chain = true,
            other => bail!("match: unknown flag {other:?}"),
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
