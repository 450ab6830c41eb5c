//! The shapes of the node's and the edge's control answers, as serde
//! types. Unknown fields are ignored (a newer node or edge may add some);
//! a missing field is an error naming it. Maps are `BTreeMap`, so anything
//! printed from them is in name order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /v1/status` of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub zone: String,
    pub cluster: String,
    pub version: String,
    /// `stable` or `canary`.
    pub role: String,
    pub ready: bool,
    pub draining: bool,
    /// Short id of the node's log (16 hex digits, `x-tandem-log`).
    pub log_id: String,
    pub partitions: Vec<PartitionStatus>,
}

/// One partition in `/v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionStatus {
    pub id: u32,
    /// The log's identity (`file:<id>` or `kafka:<cluster>/<topic>`).
    pub log: String,
    pub log_id: String,
    pub applied_seq: u64,
    /// The engine's output hash chain at `applied_seq` (32 hex digits;
    /// empty while the replica is restoring).
    pub output_hash: String,
    pub caught_up: bool,
}

/// `GET /v1/chain/{partition}`: the applied position and the chain
/// checkpoints, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    pub partition: u32,
    pub log_id: String,
    pub applied_seq: u64,
    pub output_hash: String,
    /// K: a checkpoint is the first applied seq at or after each multiple
    /// of K. Two nodes compare only when their K is equal.
    pub checkpoint_every: u64,
    pub checkpoints: Vec<Checkpoint>,
}

/// One chain checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub seq: u64,
    pub output_hash: String,
}

/// `GET /admin/weights` of an edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    /// The routes' generation: a write based on another one is refused.
    pub generation: u64,
    /// The weight of every cluster now.
    pub weights: BTreeMap<String, u32>,
    /// The weights set through the admin API (kept across reloads).
    pub admin_weights: BTreeMap<String, u32>,
}

/// `GET /admin/routes` of an edge (also the answer to a weight write).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Routes {
    pub generation: u64,
    /// The process serving the admin listener.
    pub pid: u32,
    pub zone: String,
    pub draining: bool,
    pub weights: BTreeMap<String, u32>,
    pub admin_weights: BTreeMap<String, u32>,
    pub clusters: Vec<RouteCluster>,
    /// Requests answered per cluster since the edge started.
    pub split: BTreeMap<String, u64>,
}

/// One cluster in `/admin/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCluster {
    pub name: String,
    pub version: String,
    pub role: String,
    pub weight: u32,
    pub nodes: Vec<RouteNode>,
}

/// One node of a cluster in `/admin/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteNode {
    pub addr: String,
    pub zone: String,
    /// Its `/readyz` answered 200 at the last check.
    pub ready: bool,
    /// Ejected by passive outlier detection now.
    pub ejected: bool,
    /// Ready and not ejected: the edge sends to it.
    pub available: bool,
    pub in_flight: u64,
    /// The log the node last reported (`x-tandem-log`), if any.
    pub log: Option<String>,
}

/// Bits of a Kafka log's seq that hold a record's index within its
/// message: `seq = (offset + 1) << 16 | index` (`tandem_kafka::seq`).
const KAFKA_INDEX_BITS: u32 = 16;

/// How many commands a replica at `behind` has still to apply to reach
/// `ahead`, on the log named `log` (a [`PartitionStatus::log`] identity).
///
/// On a file log a seq counts commands, so this is the difference. On a
/// Kafka log (`kafka:…`) a seq is a message offset and an index within
/// the message, and how many commands the messages in between hold is not
/// known from seqs alone: the answer is then a lower bound, one command per
/// whole message in between plus the commands of `ahead`'s own message up
/// to it. Counting raw seq units instead would make one message look like
/// 65 536 commands of lag.
pub fn commands_behind(log: &str, ahead: u64, behind: u64) -> u64 {
    if ahead <= behind {
        return 0;
    }
    if !log.starts_with("kafka:") {
        return ahead - behind;
    }
    let index = |s: u64| s & ((1 << KAFKA_INDEX_BITS) - 1);
    let messages = (ahead >> KAFKA_INDEX_BITS) - (behind >> KAFKA_INDEX_BITS);
    if messages == 0 {
        index(ahead) - index(behind)
    } else {
        messages + index(ahead)
    }
}

#[cfg(test)]
mod lag_tests {
    use super::commands_behind;

    #[test]
    fn file_log_seqs_count_commands() {
        assert_eq!(commands_behind("file:ab", 1500, 500), 1000);
        assert_eq!(commands_behind("file:ab", 500, 1500), 0);
    }

    #[test]
    fn kafka_seqs_count_messages_and_indexes() {
        let seq = |offset: u64, index: u64| ((offset + 1) << 16) | index;
        let log = "kafka:cluster/orders";
        // One message of 10 commands: the last of it against the first.
        assert_eq!(commands_behind(log, seq(7, 9), seq(7, 0)), 9);
        // The next message's first command is one command ahead.
        assert_eq!(commands_behind(log, seq(8, 0), seq(7, 9)), 1);
        // 1000 messages later: at least 1000 commands, not 65 536 000.
        assert_eq!(commands_behind(log, seq(1007, 0), seq(7, 0)), 1000);
        assert_eq!(commands_behind(log, seq(7, 0), seq(8, 0)), 0);
    }
}
