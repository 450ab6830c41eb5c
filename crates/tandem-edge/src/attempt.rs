//! The edge's attempt rules, with no I/O and no clock of their own: which
//! node a request goes to next, whether an attempt's outcome is the answer
//! or calls for another node, and how a failure counts against a node's
//! health. `proxy` runs them with hyper and the edge's clock; the seeded
//! simulation (`tandem-sim`) runs the very same rules with its virtual
//! clock and network.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::Method;

use crate::table::{NodeState, Table, TableCluster};

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tried {
    /// The node answered with this status.
    Answered(u16),
    /// The connection failed: nothing reached the node.
    ConnectFailed,
    /// No answer within the upstream timeout.
    TimedOut,
    /// The connection broke after the request may have reached the node.
    Dropped,
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Give the client the node's answer.
    Answer,
    /// Try another node (if the plan has one).
    TryAnother,
    /// The request may have reached the node and is not known safe to
    /// repeat: answer 504 (timed out) or 502 (dropped).
    NotRepeated,
}

/// 502–504 from a node: it could not serve (overloaded, draining, its
/// log failing); another node may.
pub fn retryable(status: u16) -> bool {
    matches!(status, 502..=504)
}

/// May a request that reached a node, or may have (a timeout, a dropped
/// connection, a 502/503/504), be sent again, to another node? Only when
/// repeating it cannot do something twice: reads (`GET`, `HEAD`), and the
/// order writes whose second copy cannot take effect: `POST /v1/orders`
/// (a place is idempotent by its id: the engine refuses a taken id) and
/// `DELETE /v1/orders/{market}/{id}` (a second cancel is refused by the
/// engine and the node answers the original). Anything else is answered
/// with what the first attempt got. (A request that never reached a node
/// — its connection failed — may always go to another; see
/// [`Plan::judge`].) An amend is [`repeatable_after_answer`] only.
pub fn repeatable(method: &Method, path: &str) -> bool {
    if method == Method::GET || method == Method::HEAD {
        return true;
    }
    let mut seg = path.split('/');
    let (Some(""), Some("v1"), Some("orders")) = (seg.next(), seg.next(), seg.next()) else {
        return false;
    };
    let rest: Vec<&str> = seg.collect();
    match rest.as_slice() {
        [] => method == Method::POST,
        [market, id] if !market.is_empty() && !id.is_empty() => method == Method::DELETE,
        _ => false,
    }
}

/// May a request a node *answered* with 502/503/504 go to another node?
/// What [`repeatable`] allows, and `PATCH /v1/orders/{market}/{id}`: a
/// node that answered is done with the amend (it refused it before the
/// log, or appended it with its base, `log.retry_safe_amends`), and a
/// second copy of an amend that took effect is refused `stale` by every
/// replica. Not after a timeout or a dropped connection: the first node
/// may not have read the order's base yet, and reading it after the client
/// has amended the order again would let that copy apply. An edge in front
/// of nodes older than bases, or with `log.retry_safe_amends` off, must
/// not repeat amends at all.
pub fn repeatable_after_answer(method: &Method, path: &str) -> bool {
    repeatable(method, path) || (method == Method::PATCH && repeatable(&Method::DELETE, path))
}

/// The nearest available node of `cluster` not tried yet: the edge's own
/// `zone` first, then the others; fewest requests in flight, ties rotated
/// by `spin`.
pub fn pick_node(
    cluster: &TableCluster,
    zone: &str,
    now_ms: u64,
    tried: &[Arc<NodeState>],
    spin: u64,
) -> Option<Arc<NodeState>> {
    let n = cluster.nodes.len();
    let mut best: Option<(bool, u32, &Arc<NodeState>)> = None;
    for k in 0..n {
        let node = &cluster.nodes[(k + spin as usize) % n];
        let s = &node.state;
        if !s.available(now_ms) || tried.iter().any(|t| Arc::ptr_eq(t, s)) {
            continue;
        }
        let far = node.zone != zone;
        let load = s.in_flight.load(Ordering::Relaxed);
        if best.is_none_or(|(bf, bl, _)| (far, load) < (bf, bl)) {
            best = Some((far, load, s));
        }
    }
    best.map(|(_, _, s)| Arc::clone(s))
}

/// Clusters with no node that may take a request now, as a bit set.
pub fn unavailable(table: &Table, now_ms: u64) -> u64 {
    let mut mask = 0;
    for (i, c) in table.clusters.iter().enumerate().take(64) {
        if !c.nodes.iter().any(|n| n.state.available(now_ms)) {
            mask |= 1 << i;
        }
    }
    mask
}

/// Counts a failed attempt on `node` at `now_ms`; after `eject_after` in
/// a row the node gets nothing new for `eject_ms`, and then only once an
/// active check has passed again (its `ready` is cleared). True when this
/// failure ejected it.
pub fn record_failure(node: &NodeState, eject_after: u32, eject_ms: u64, now_ms: u64) -> bool {
    let n = node.failures.fetch_add(1, Ordering::Relaxed) + 1;
    if n < eject_after {
        return false;
    }
    node.failures.store(0, Ordering::Relaxed);
    node.ejected_until_ms
        .store(now_ms + eject_ms, Ordering::Relaxed);
    node.ready.store(false, Ordering::Relaxed);
    true
}

/// An attempt that was answered without a node failure.
pub fn record_success(node: &NodeState) {
    node.failures.store(0, Ordering::Relaxed);
}

/// The attempts at one request: the routing decision over the table as it
/// was when the request arrived, the nodes tried, and the rules above.
#[derive(Debug)]
pub struct Plan<'z> {
    table: Arc<Table>,
    pin: Option<tandem_route::Role>,
    account: Option<Vec<u8>>,
    /// Scores the request without an account; also rotates ties between
    /// nodes.
    key: u64,
    zone: &'z str,
    now_ms: u64,
    excluded: u64,
    tried: Vec<Arc<NodeState>>,
    max_attempts: u32,
    /// After a timeout or a dropped connection ([`repeatable`]).
    may_repeat: bool,
    /// After a 502–504 answer ([`repeatable_after_answer`]).
    may_repeat_answered: bool,
}

/// Who a request is, as routing sees it.
#[derive(Debug, Clone)]
pub struct Routed {
    pub pin: Option<tandem_route::Role>,
    pub account: Option<Vec<u8>>,
    pub key: u64,
}

impl<'z> Plan<'z> {
    /// `method` and `path` decide whether the request may be repeated;
    /// `zone` is the edge's own.
    pub fn new(
        table: Arc<Table>,
        who: Routed,
        (method, path): (&Method, &str),
        zone: &'z str,
        now_ms: u64,
        max_attempts: u32,
    ) -> Plan<'z> {
        Plan {
            excluded: unavailable(&table, now_ms),
            table,
            pin: who.pin,
            account: who.account,
            key: who.key,
            zone,
            now_ms,
            tried: Vec::new(),
            max_attempts,
            may_repeat: repeatable(method, path),
            may_repeat_answered: repeatable_after_answer(method, path),
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.tried.len() as u32
    }

    /// May this request be sent again after it reached a node?
    pub fn may_repeat(&self) -> bool {
        self.may_repeat
    }

    /// The table the plan routes over.
    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// The index (in [`Plan::table`]) of the cluster of the next attempt
    /// and its node, or `None` when the attempts are used up or no
    /// eligible cluster has a node left. Call [`Plan::sent`] when the
    /// attempt is really made.
    pub fn next_node(&mut self) -> Option<(usize, Arc<NodeState>)> {
        if self.attempts() >= self.max_attempts {
            return None;
        }
        let clusters = self.table.route_clusters();
        let req = tandem_route::Request {
            pin: self.pin,
            account: self.account.as_deref(),
            key: self.key,
        };
        loop {
            let ci = tandem_route::route_excluding(&clusters, &req, self.excluded)?;
            let cluster = &self.table.clusters[ci];
            match pick_node(cluster, self.zone, self.now_ms, &self.tried, self.key) {
                Some(node) => return Some((ci, node)),
                None => self.excluded |= 1 << ci,
            }
        }
    }

    /// The attempt on `node` is made.
    pub fn sent(&mut self, node: &Arc<NodeState>) {
        self.tried.push(Arc::clone(node));
    }

    /// What an attempt's outcome means for the request.
    pub fn judge(&self, t: Tried) -> Verdict {
        match t {
            Tried::Answered(s) if !retryable(s) || !self.may_repeat_answered => Verdict::Answer,
            Tried::Answered(_) | Tried::ConnectFailed => Verdict::TryAnother,
            Tried::TimedOut | Tried::Dropped if !self.may_repeat => Verdict::NotRepeated,
            Tried::TimedOut | Tried::Dropped => Verdict::TryAnother,
        }
    }
}

/// Does this outcome count against the node's health?
pub fn is_failure(t: Tried) -> bool {
    match t {
        Tried::Answered(s) => retryable(s),
        Tried::ConnectFailed | Tried::TimedOut | Tried::Dropped => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_known_safe_are_repeated() {
        let yes = [
            ("GET", "/v1/status"),
            ("GET", "/v1/orders/M/o1"),
            ("HEAD", "/anything"),
            ("POST", "/v1/orders"),
            ("DELETE", "/v1/orders/M/o1"),
            ("DELETE", "/v1/orders/BTC-USD/o%2F1"),
        ];
        let no = [
            ("POST", "/v1/orders/M/o1"),
            ("POST", "/v1/orders/"),
            ("POST", "/v1/other"),
            ("PUT", "/v1/orders"),
            ("PUT", "/v1/orders/M/o1"),
            ("DELETE", "/v1/orders"),
            ("DELETE", "/v1/orders/M"),
            ("DELETE", "/v1/orders/M/"),
            ("DELETE", "/v1/orders//o1"),
            ("DELETE", "/v1/orders/M/o1/x"),
            ("PATCH", "/v1/orders/M/o1"),
            ("PATCH", "/v1/orders/M"),
            ("PATCH", "/v2/orders/M/o1"),
            ("OPTIONS", "/v1/orders"),
            ("POST", "/admin/weights"),
        ];
        for (m, p) in yes {
            assert!(repeatable(&m.parse().unwrap(), p), "{m} {p}");
            assert!(repeatable_after_answer(&m.parse().unwrap(), p), "{m} {p}");
        }
        for (m, p) in no {
            assert!(!repeatable(&m.parse().unwrap(), p), "{m} {p}");
            let after = repeatable_after_answer(&m.parse().unwrap(), p);
            assert_eq!(after, (m, p) == ("PATCH", "/v1/orders/M/o1"), "{m} {p}");
        }
    }

    #[test]
    fn a_timeout_is_repeated_only_when_safe_and_a_4xx_never() {
        let table = Arc::new(Table {
            clusters: Vec::new(),
            generation: 1,
        });
        let who = Routed {
            pin: None,
            account: None,
            key: 0,
        };
        let plan = |m: &Method| {
            Plan::new(
                Arc::clone(&table),
                who.clone(),
                (m, "/v1/orders/M/o"),
                "z",
                0,
                3,
            )
        };
        let (cancel, amend, put) = (
            plan(&Method::DELETE),
            plan(&Method::PATCH),
            plan(&Method::PUT),
        );
        assert_eq!(cancel.judge(Tried::TimedOut), Verdict::TryAnother);
        // An amend goes on after a node's 503 (it is done with it), not
        // after a timeout (it may not have read the order's base yet).
        assert_eq!(amend.judge(Tried::Answered(503)), Verdict::TryAnother);
        assert_eq!(amend.judge(Tried::TimedOut), Verdict::NotRepeated);
        assert_eq!(amend.judge(Tried::Dropped), Verdict::NotRepeated);
        assert_eq!(amend.judge(Tried::ConnectFailed), Verdict::TryAnother);
        assert_eq!(put.judge(Tried::TimedOut), Verdict::NotRepeated);
        assert_eq!(put.judge(Tried::Dropped), Verdict::NotRepeated);
        assert_eq!(put.judge(Tried::ConnectFailed), Verdict::TryAnother);
        assert_eq!(put.judge(Tried::Answered(503)), Verdict::Answer);
        assert_eq!(cancel.judge(Tried::Answered(503)), Verdict::TryAnother);
        assert_eq!(cancel.judge(Tried::Answered(400)), Verdict::Answer);
        assert!(is_failure(Tried::Answered(502)) && !is_failure(Tried::Answered(409)));
    }

    #[test]
    fn failures_in_a_row_eject_a_node_until_a_check_passes() {
        let t = crate::table::Routes::new(&[crate::config::ClusterConfig {
            name: "c".into(),
            version: "v".into(),
            role: crate::config::Role::Stable,
            weight: 1,
            nodes: vec![crate::config::NodeAddr {
                addr: "n:1".into(),
                zone: "z".into(),
            }],
        }])
        .table();
        let node = &t.clusters[0].nodes[0].state;
        assert!(!record_failure(node, 3, 1_000, 50));
        record_success(node);
        assert!(!record_failure(node, 3, 1_000, 50));
        assert!(!record_failure(node, 3, 1_000, 50));
        assert!(record_failure(node, 3, 1_000, 50));
        assert!(!node.available(500));
        node.ready.store(true, Ordering::Relaxed);
        assert!(!node.available(1_049) && node.available(1_050));
    }
}
