//! The first command a diverged canary computed differently, found by
//! replaying the run's Kafka log through stable's engine configuration and
//! the canary's ([`crate::diverge`]). The controller names the first
//! checkpoint whose hashes differ; this names the command inside it and
//! both sides' events, which is what an operator needs to see.

use anyhow::{Context, Result};
use tandem_core::Config;
use tandem_kafka::{KafkaLog, KafkaLogConfig};

use crate::report::Divergence;
use crate::world::{World, TOPIC};

/// The engine configuration a node builds from its `[limits]`
/// (`tandem_node::node`): the node's defaults, and an open-order limit
/// per account when given.
pub fn engine_config(max_open_per_account: Option<u32>) -> Config {
    let limits = tandem_node::NodeConfig::default().limits;
    Config {
        max_markets: limits.max_markets,
        max_live_orders: limits.max_live_orders,
        max_open_per_account: max_open_per_account.unwrap_or(limits.max_open_orders_per_account),
        ..Config::default()
    }
}

/// Replays the log up to `up_to_seq` (the first differing checkpoint)
/// with stable's configuration against `cluster`'s.
pub async fn first_difference(w: &World, cluster: &str, up_to_seq: u64) -> Result<Divergence> {
    let brokers = w.broker_addr.to_string();
    let canary_limit = w.setup.canary_open_limit;
    let cluster = cluster.to_owned();
    tokio::task::spawn_blocking(move || {
        let log = KafkaLog::open(KafkaLogConfig::new(&brokers, TOPIC, 0))
            .with_context(|| format!("open the order log on {brokers}"))?;
        let found = crate::diverge::first_difference(
            &log,
            engine_config(None),
            engine_config(canary_limit),
            Some(up_to_seq),
        )?;
        let d = found.with_context(|| {
            format!(
                "replaying the log to seq {up_to_seq} with stable's and {cluster}'s \
                 configuration found no difference"
            )
        })?;
        Ok(Divergence {
            seq: d.seq,
            cluster,
            stable_event: d.stable_events,
            canary_event: d.canary_events,
            command: d.command,
        })
    })
    .await
    .context("replay task")?
}
