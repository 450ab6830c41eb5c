//! The edge's routing decision: which cluster serves a request.
//!
//! One pure function, used natively by the edge proxy (`tandem-edge`) and,
//! compiled to WebAssembly, by the Cloudflare Worker (`deploy/cloudflare/`),
//! so both send an account to the same cluster at the same weights (the
//! shared vectors in `vectors.json` prove it). The rules, in order:
//!
//! 1. **Pin.** `x-dex-version: canary|stable` ([`Role::from_header`]) limits
//!    the candidates to the clusters of that role, whatever their weights:
//!    chosen by weight among them if any has a weight above 0, else equally.
//! 2. **Account affinity.** With an account, the cluster is chosen by
//!    *weighted rendezvous hashing*: every candidate scores the account and
//!    the best score wins, so an account stays on one cluster, and a weight
//!    change moves an account only towards a cluster whose weight grew
//!    relative to the one it leaves (the fewest moves the new weights need
//!    for two clusters; close to it for more, see the `split` example).
//! 3. **Weighted split.** Without an account, the caller's per-request key
//!    (a counter or a random number) is scored the same way, so requests
//!    spread by weight.
//!
//! Unpinned requests never go to a cluster of weight 0 (a canary at weight
//! 0 may not have passed verification yet). [`ranked`] and
//! [`route_excluding`] give the next-best cluster when the best one is
//! unhealthy: rendezvous ranks every candidate, so falling back keeps the
//! account's second choice stable too.
//!
//! # Same answer on every machine
//!
//! The score of cluster *i* for a key is `-ln(u_i) / w_i` with `u_i` a
//! uniform hash in (0, 1): the lowest wins with probability `w_i / Σw`.
//! `ln` from a maths library may differ in its last bit between x86_64 and
//! wasm32, which would send an account to different clusters at a near tie.
//! So no float is used at all: `-log2(u)` (a constant multiple of `-ln u`,
//! which does not change which score is lowest) is computed in 52-bit fixed
//! point by integer squaring ([`score`]), and scores are compared by
//! cross-multiplying in `u128`. Integer arithmetic is the same on every
//! target by definition; the hash is xxh3-64, defined on bytes.
//!
//! The crate is `no_std` and allocates nothing.

#![no_std]

pub mod score;
pub mod wire;

#[cfg(feature = "wasm")]
mod ffi;

use core::fmt;

/// At most this many clusters take part in a decision (the exclusion set is
/// a `u64` bit mask). [`validate`] refuses more; [`route`] ignores the rest.
pub const MAX_CLUSTERS: usize = 64;

/// Longest cluster name, in bytes (the wire encoding gives it one byte).
pub const MAX_NAME_BYTES: usize = 255;

/// The version a cluster runs, as `x-dex-version` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Stable,
    Canary,
}

impl Role {
    /// Parses an `x-dex-version` header value: `canary` or `stable`, in any
    /// case, with optional surrounding spaces or tabs. Anything else is no
    /// pin (`None`): a client's typo must not fail its request.
    pub fn from_header(value: &[u8]) -> Option<Role> {
        let v = trim_ows(value);
        if v.eq_ignore_ascii_case(b"stable") {
            Some(Role::Stable)
        } else if v.eq_ignore_ascii_case(b"canary") {
            Some(Role::Canary)
        } else {
            None
        }
    }

    /// The header value: `stable` or `canary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
        }
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// One cluster the edge can send traffic to.
///
/// The name is part of every score, so a cluster's accounts depend on its
/// name and weight only: not on its position in the list, and not on the
/// other clusters' names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cluster<'a> {
    pub name: &'a str,
    pub role: Role,
    /// Share of unpinned traffic, relative to the other clusters' weights.
    pub weight: u32,
}

/// What the routing decision looks at in a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// From `x-dex-version` ([`Role::from_header`]).
    pub pin: Option<Role>,
    /// The account's bytes as the client sent them (UTF-8 for a JSON
    /// string), if the edge found one. The caller decides what counts as an
    /// account; the Worker treats an empty one as absent.
    pub account: Option<&'a [u8]>,
    /// Used only without an account: any per-request number (a counter or
    /// a random u64); it is hashed, so a counter spreads as well as random.
    pub key: u64,
}

/// The index of the cluster that serves `req`, or `None` if no cluster may
/// (no cluster of the pinned role, or every weight 0 without a pin).
pub fn route(clusters: &[Cluster<'_>], req: &Request<'_>) -> Option<usize> {
    route_excluding(clusters, req, 0)
}

/// Like [`route`], but never picks a cluster whose index has its bit set in
/// `excluded` (bit `i` excludes `clusters[i]`): the edge's fallback when a
/// cluster is unhealthy. Excluding the best cluster yields the second best
/// of the same ranking.
///
/// With a pin, "by weight if any has weight above 0, else equally" is
/// judged among the clusters not excluded, so a pinned request still finds
/// a zero-weight cluster of its role when the weighted ones are down.
pub fn route_excluding(
    clusters: &[Cluster<'_>],
    req: &Request<'_>,
    excluded: u64,
) -> Option<usize> {
    let n = clusters.len().min(MAX_CLUSTERS);
    let candidate = |i: usize| {
        excluded & (1u64 << i) == 0 && req.pin.is_none_or(|role| clusters[i].role == role)
    };
    // Pinned to a role whose remaining clusters all have weight 0: equal
    // weights among them.
    let equal = req.pin.is_some() && (0..n).all(|i| !candidate(i) || clusters[i].weight == 0);

    // The candidates' hashes, then their `-log2` side by side, a few at a
    // time (each is a chain of 52 dependent squarings: one after another
    // they waited on each other), then the lowest score.
    const L: usize = score::LANES;
    let mut best: Option<(usize, score::Score)> = None;
    let (mut idx, mut hashes, mut logs) = ([0usize; L], [0u64; L], [0u64; L]);
    let mut k = 0;
    let mut settle = |idx: &[usize], hashes: &[u64], logs: &mut [u64]| {
        score::neg_log2_units(hashes, logs);
        for (&i, &log) in idx.iter().zip(logs.iter()) {
            let c = &clusters[i];
            let s = score::Score::from_log(log, if equal { 1 } else { c.weight });
            match best {
                Some((b, ref bs)) if !s.beats(bs, c.name, clusters[b].name) => {}
                _ => best = Some((i, s)),
            }
        }
    };
    for (i, c) in clusters.iter().enumerate().take(n) {
        if !candidate(i) || (!equal && c.weight == 0) {
            continue;
        }
        idx[k] = i;
        hashes[k] = score::unit_hash(c.name, req.account, req.key);
        k += 1;
        if k == L {
            settle(&idx, &hashes, &mut logs);
            k = 0;
        }
    }
    settle(&idx[..k], &hashes[..k], &mut logs[..k]);
    best.map(|(i, _)| i)
}

/// Every cluster that may serve `req`, best first: the first is
/// [`route`]'s answer, the next ones are where the edge retries. Each step
/// costs one [`route_excluding`] (a decision is O(clusters), so a whole
/// ranking is O(clusters²), which is nothing for a handful of clusters).
pub fn ranked<'c>(clusters: &'c [Cluster<'c>], req: Request<'c>) -> Ranked<'c> {
    Ranked {
        clusters,
        req,
        excluded: 0,
    }
}

/// The iterator [`ranked`] returns.
#[derive(Clone, Debug)]
pub struct Ranked<'c> {
    clusters: &'c [Cluster<'c>],
    req: Request<'c>,
    excluded: u64,
}

impl Iterator for Ranked<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        let i = route_excluding(self.clusters, &self.req, self.excluded)?;
        self.excluded |= 1u64 << i;
        Some(i)
    }
}

/// Why a cluster list cannot be routed over as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// No cluster at all.
    Empty,
    /// More than [`MAX_CLUSTERS`].
    TooMany(usize),
    /// A name that is empty or longer than [`MAX_NAME_BYTES`] (its index).
    BadName(usize),
    /// Two clusters share a name (the second one's index); their accounts
    /// would be the same set.
    DuplicateName(usize),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Empty => write!(f, "no cluster configured"),
            ConfigError::TooMany(n) => {
                write!(f, "{n} clusters configured, at most {MAX_CLUSTERS}")
            }
            ConfigError::BadName(i) => {
                write!(f, "cluster {i}: name must be 1 to {MAX_NAME_BYTES} bytes")
            }
            ConfigError::DuplicateName(i) => write!(f, "cluster {i}: name used twice"),
        }
    }
}

impl core::error::Error for ConfigError {}

/// Checks a cluster list once, when the configuration is loaded, so that
/// every later decision considers all of it. Weights may all be 0 (every
/// unpinned request is then refused, which is a legal, if drastic, state).
pub fn validate(clusters: &[Cluster<'_>]) -> Result<(), ConfigError> {
    if clusters.is_empty() {
        return Err(ConfigError::Empty);
    }
    if clusters.len() > MAX_CLUSTERS {
        return Err(ConfigError::TooMany(clusters.len()));
    }
    for (i, c) in clusters.iter().enumerate() {
        if c.name.is_empty() || c.name.len() > MAX_NAME_BYTES {
            return Err(ConfigError::BadName(i));
        }
        if clusters[..i].iter().any(|o| o.name == c.name) {
            return Err(ConfigError::DuplicateName(i));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
