//! The decision core of `tandem rollout`: `decide(plan, state, input,
//! now) -> (state, decisions)`. No I/O, no clock, no runtime: time comes
//! in as `now_ms`, what the world looks like comes in as an
//! [`Observation`] (already judged: the observers and `judge` turn metrics
//! into [`ClusterView`]s), and what to do goes out as [`Decision`]s, each
//! one a line of the timeline (`contracts/rollout-plan.md`, "Timeline").
//! The shell executes `start_cluster`, `set_weights` and `rollback`, saves
//! the state after every call, and feeds the next observation.
//!
//! The stages of one phase: **prepare** (start a cold cluster, then verify
//! every canary cluster that is to get weight: all its nodes ready, lag
//! within the gate, output hash equal to stable's at a common checkpoint),
//! **apply** (every edge must report the new weights), **hold** (judge
//! every interval; pass once the hold is over, every weighted cluster was
//! judged at least once, and nothing breaches). Before the first phase,
//! stable alone is observed for the baseline window.
//!
//! Promises kept here, each tested below on recorded observation
//! sequences:
//! - no canary cluster gets weight before it is verified;
//! - a breach that lasts `breach_for` rolls back (or pauses, as the plan
//!   says); a hash divergence rolls back at once, to stable alone;
//! - a breach that stable shares (stable breaches the same gate at the
//!   same time, or stable alone breaches) is not the canary's doing:
//!   moving traffic back to stable would not end it. The phase holds
//!   (it cannot pass while anything breaches) and, if it lasts
//!   `systemic_ms`, the rollout pauses for an operator;
//! - missing data is never a pass: without observations the phase holds,
//!   and after `missing_limit` it pauses;
//! - weights changed on an edge by hand pause the rollout;
//! - a restart resumes the same phase (its hold starts again), never a
//!   later one.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::plan::{OnFailure, Plan, Start, Version};

/// Weight per cluster name.
pub type Weights = BTreeMap<String, u32>;

/// A gate that does not hold, with its value and limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    pub cluster: String,
    pub gate: String,
    pub value: f64,
    pub limit: f64,
}

/// The output hash of a cluster's nodes against stable's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HashCheck {
    /// Equal at this checkpoint seq (the newest both have).
    Agrees { seq: u64 },
    /// Different at this checkpoint seq (the first that differs), with
    /// what is known about it (the command, both events).
    Differs { seq: u64, detail: String },
    /// No common checkpoint yet, or a node did not answer.
    Unknown,
}

/// One cluster as observed over the last interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Nodes the observers found, and how many of them are ready.
    pub nodes: usize,
    pub nodes_ready: usize,
    /// The largest replica lag among its nodes, in commands.
    pub lag_max: u64,
    pub hash: HashCheck,
    /// Requests in the window; `None` when the gates were not judged
    /// (fewer than `min_requests`).
    pub judged: Option<u64>,
    /// Gates that do not hold (empty when judged and fine).
    pub breaches: Vec<Breach>,
    /// For the timeline and the status page: the window's p99 and error
    /// ratio, when there were requests.
    pub p99_ms: Option<f64>,
    pub error_ratio: Option<f64>,
}

/// What the observers saw in one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Per cluster of the plan (a cluster with no entry: no data).
    pub clusters: BTreeMap<String, ClusterView>,
    /// The weights each edge carries now, in the plan's order; `None` for
    /// an edge that did not answer.
    pub edges: Vec<Option<Weights>>,
}

/// An operator's command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Pause,
    Resume,
    /// End the current hold now (gates still apply).
    Promote,
    /// Roll back now.
    Abort,
}

/// What `decide` is called with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    /// An interval passed: what was observed (`None`: nothing arrived).
    Tick(Option<Observation>),
    Command(Command),
    /// The controller started again from its saved state.
    Restarted,
}

/// Where a phase stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stage {
    /// Nothing done yet.
    New,
    /// Stable alone is observed since `since_ms`.
    Baseline { since_ms: u64 },
    /// Getting the current phase ready: cold clusters started (at the
    /// time noted), canary clusters verified.
    Prepare {
        since_ms: u64,
        started: BTreeMap<String, u64>,
    },
    /// Weights sent; waiting until every edge carries them. `then` is
    /// where to go once they do.
    Apply {
        since_ms: u64,
        weights: Weights,
        then: Then,
    },
    /// The current phase holds since `since_ms`.
    Hold { since_ms: u64 },
    /// Stopped advancing; `Resume` goes back to `resume`.
    Paused { reason: String, resume: Box<Stage> },
    /// Rolled back (terminal).
    RolledBack { reason: String },
    /// Every phase passed (terminal).
    Done,
}

/// Where an `Apply` leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Then {
    Baseline,
    Hold,
    RolledBack,
}

/// The controller's state, saved after every decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Index of the current phase in the plan.
    pub phase: usize,
    pub stage: Stage,
    /// The last phase that passed.
    pub passed: Option<usize>,
    /// The weights the controller last set (what every edge should carry).
    pub target: Option<Weights>,
    /// When the current breach was first observed.
    pub breach_since_ms: Option<u64>,
    /// When the current breach that stable shares was first observed.
    #[serde(default)]
    pub shared_breach_since_ms: Option<u64>,
    /// Clusters judged at least once during the current hold.
    pub judged: BTreeSet<String>,
    /// When the last observation arrived.
    pub last_observation_ms: Option<u64>,
    /// An operator asked to end the current hold.
    pub promote: bool,
    /// Cold clusters started, and how long each took to get ready.
    pub cold_started_ms: BTreeMap<String, u64>,
}

impl State {
    pub fn new() -> State {
        State {
            phase: 0,
            stage: Stage::New,
            passed: None,
            target: None,
            breach_since_ms: None,
            shared_breach_since_ms: None,
            judged: BTreeSet::new(),
            last_observation_ms: None,
            promote: false,
            cold_started_ms: BTreeMap::new(),
        }
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// A timeline action (`contracts/rollout-plan.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Act {
    Baseline,
    Verify,
    /// Start this cold cluster (the shell's actuator does it).
    StartCluster(String),
    /// Set these weights on every edge.
    SetWeights,
    Hold,
    Pass,
    Breach,
    /// Set these weights on every edge, now.
    Rollback,
    Pause,
    Resume,
    Promote,
    Abort,
    Done,
}

impl Act {
    /// The contract's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            Act::Baseline => "baseline",
            Act::Verify => "verify",
            Act::StartCluster(_) => "start_cluster",
            Act::SetWeights => "set_weights",
            Act::Hold => "hold",
            Act::Pass => "pass",
            Act::Breach => "breach",
            Act::Rollback => "rollback",
            Act::Pause => "pause",
            Act::Resume => "resume",
            Act::Promote => "promote",
            Act::Abort => "abort",
            Act::Done => "done",
        }
    }
}

/// One decision: a timeline line, and for `start_cluster`, `set_weights`
/// and `rollback`, work for the shell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub act: Act,
    pub phase: String,
    /// The weights to set (`set_weights`, `rollback`).
    pub weights: Option<Weights>,
    pub reason: String,
    /// For a rollback or breach: when the breach was first observed.
    pub breach_started_ms: Option<u64>,
    /// The measurements that breached.
    pub breaches: Vec<Breach>,
}

/// Bounds the decisions use that the plan does not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// No observation for this long: pause.
    pub missing_ms: u64,
    /// Edges not all carrying the weights after this long: pause.
    pub apply_ms: u64,
    /// A cluster not verified (or a cold one not ready) after this long:
    /// pause.
    pub prepare_ms: u64,
    /// A hold that is over but still has a weighted cluster never judged
    /// (too few requests for `min_requests` in any window) this long
    /// after its end: pause, since missing data is never a pass.
    pub unjudged_ms: u64,
    /// A breach that stable shares, this long: pause.
    pub systemic_ms: u64,
}

impl Limits {
    /// From the plan: missing data for three intervals (at least
    /// `breach_for`) pauses; 5 s to reach every edge (the rollback
    /// promise); 10 minutes to start and verify a cluster; 2 minutes
    /// past a hold's end for every weighted cluster to be judged.
    pub fn for_plan(plan: &Plan) -> Limits {
        let interval = plan.metrics.interval().as_millis() as u64;
        let breach_for = plan.gates.breach_for.as_millis() as u64;
        Limits {
            missing_ms: (3 * interval).max(breach_for).max(1),
            apply_ms: 5_000,
            prepare_ms: 600_000,
            unjudged_ms: 120_000,
            systemic_ms: 60_000,
        }
    }
}

fn weights_of(plan: &Plan, phase: usize) -> Weights {
    let mut w: Weights = plan.clusters.iter().map(|c| (c.name.clone(), 0)).collect();
    for (name, v) in &plan.phases[phase].weights {
        w.insert(name.clone(), *v);
    }
    w
}

/// Stable clusters share 100 (the first ones take the remainder), canary
/// clusters 0.
pub fn stable_alone(plan: &Plan) -> Weights {
    let stable: Vec<&str> = plan
        .clusters
        .iter()
        .filter(|c| c.version == Version::Stable)
        .map(|c| c.name.as_str())
        .collect();
    let n = stable.len().max(1) as u32;
    let mut w: Weights = plan.clusters.iter().map(|c| (c.name.clone(), 0)).collect();
    for (i, name) in stable.iter().enumerate() {
        let extra = u32::from((i as u32) < 100 % n);
        w.insert((*name).to_owned(), 100 / n + extra);
    }
    w
}

/// Weights to roll back to: the last passed phase's, or stable alone.
fn rollback_weights(plan: &Plan, state: &State) -> Weights {
    match state.passed {
        Some(p) => weights_of(plan, p),
        None => stable_alone(plan),
    }
}

struct Out<'p> {
    plan: &'p Plan,
    phase: usize,
    list: Vec<Decision>,
}

impl Out<'_> {
    fn push(&mut self, act: Act, weights: Option<Weights>, reason: String) {
        self.list.push(Decision {
            act,
            phase: self.phase_name(),
            weights,
            reason,
            breach_started_ms: None,
            breaches: Vec::new(),
        });
    }
    fn phase_name(&self) -> String {
        self.plan
            .phases
            .get(self.phase)
            .map_or_else(|| "baseline".to_owned(), |p| p.name.clone())
    }
}

/// Decides what to do with `input` at `now_ms`. Pure: the same plan,
/// state, input and time give the same result.
pub fn decide(
    plan: &Plan,
    limits: Limits,
    state: &State,
    input: &Input,
    now_ms: u64,
) -> (State, Vec<Decision>) {
    let mut s = state.clone();
    let mut out = Out {
        plan,
        phase: s.phase,
        list: Vec::new(),
    };
    match input {
        Input::Command(c) => command(plan, &mut s, &mut out, *c, now_ms),
        Input::Restarted => restarted(&mut s, &mut out, "resent after a restart", now_ms),
        Input::Tick(obs) => tick(plan, limits, &mut s, &mut out, obs.as_ref(), now_ms),
    }
    (s, out.list)
}

fn restarted(s: &mut State, out: &mut Out<'_>, why: &str, now_ms: u64) {
    // The same phase again: a hold starts over, weights are sent again,
    // a baseline is observed again. Never forward.
    s.breach_since_ms = None;
    s.shared_breach_since_ms = None;
    s.last_observation_ms = Some(now_ms);
    s.stage = match std::mem::replace(&mut s.stage, Stage::New) {
        Stage::Hold { .. } => Stage::Hold { since_ms: now_ms },
        Stage::Baseline { .. } => Stage::Baseline { since_ms: now_ms },
        Stage::Apply { weights, then, .. } => {
            // Whatever reached the edges before, send the weights again.
            out.push(Act::SetWeights, Some(weights.clone()), why.into());
            Stage::Apply {
                since_ms: now_ms,
                weights,
                then,
            }
        }
        Stage::Prepare { started, .. } => Stage::Prepare {
            since_ms: now_ms,
            started,
        },
        other => other,
    };
    if let Stage::Hold { .. } = s.stage {
        s.judged.clear();
    }
}

fn terminal(s: &State) -> bool {
    matches!(s.stage, Stage::RolledBack { .. } | Stage::Done)
}

fn command(plan: &Plan, s: &mut State, out: &mut Out<'_>, c: Command, now_ms: u64) {
    if terminal(s) {
        return;
    }
    match c {
        Command::Pause => {
            if !matches!(s.stage, Stage::Paused { .. }) {
                pause(s, out, "paused by an operator".into());
            }
        }
        Command::Resume => {
            if let Stage::Paused { resume, .. } = &s.stage {
                let resume = (**resume).clone();
                s.stage = resume;
                out.push(Act::Resume, None, "resumed by an operator".into());
                restarted(s, out, "resent on resume", now_ms);
            }
        }
        Command::Promote => {
            s.promote = true;
            out.push(
                Act::Promote,
                None,
                "the hold ends at the next observation that passes the gates".into(),
            );
        }
        Command::Abort => {
            let w = rollback_weights(plan, s);
            out.push(Act::Abort, None, "aborted by an operator".into());
            rollback(
                s,
                out,
                w,
                "aborted by an operator".into(),
                None,
                Vec::new(),
                now_ms,
            );
        }
    }
}

fn pause(s: &mut State, out: &mut Out<'_>, reason: String) {
    let resume = Box::new(std::mem::replace(&mut s.stage, Stage::New));
    s.stage = Stage::Paused {
        reason: reason.clone(),
        resume,
    };
    out.push(Act::Pause, None, reason);
}

fn rollback(
    s: &mut State,
    out: &mut Out<'_>,
    weights: Weights,
    reason: String,
    breach_started_ms: Option<u64>,
    breaches: Vec<Breach>,
    now_ms: u64,
) {
    out.list.push(Decision {
        act: Act::Rollback,
        phase: out.phase_name(),
        weights: Some(weights.clone()),
        reason,
        breach_started_ms,
        breaches,
    });
    s.target = Some(weights.clone());
    s.breach_since_ms = None;
    s.shared_breach_since_ms = None;
    s.stage = Stage::Apply {
        since_ms: now_ms,
        weights,
        then: Then::RolledBack,
    };
}

/// Sends `weights` and waits for every edge to carry them.
fn apply(s: &mut State, out: &mut Out<'_>, weights: Weights, then: Then, reason: String, now: u64) {
    out.push(Act::SetWeights, Some(weights.clone()), reason);
    s.target = Some(weights.clone());
    s.stage = Stage::Apply {
        since_ms: now,
        weights,
        then,
    };
}

fn tick(
    plan: &Plan,
    limits: Limits,
    s: &mut State,
    out: &mut Out<'_>,
    obs: Option<&Observation>,
    now: u64,
) {
    if terminal(s) || matches!(s.stage, Stage::Paused { .. }) {
        return;
    }
    if s.stage == Stage::New {
        s.last_observation_ms = Some(now);
        out.push(
            Act::Baseline,
            None,
            format!(
                "stable alone for {} s before the first phase",
                plan.baseline_window.as_secs()
            ),
        );
        let w = stable_alone(plan);
        apply(
            s,
            out,
            w,
            Then::Baseline,
            "baseline: stable alone".into(),
            now,
        );
        return;
    }
    let Some(obs) = obs else {
        let since = s.last_observation_ms.unwrap_or(now);
        if now.saturating_sub(since) >= limits.missing_ms {
            pause(
                s,
                out,
                format!(
                    "no observations for {} ms: missing data is never a pass",
                    now - since
                ),
            );
        }
        return;
    };
    s.last_observation_ms = Some(now);

    let rolling_back = matches!(
        s.stage,
        Stage::Apply {
            then: Then::RolledBack,
            ..
        }
    );
    // Correctness first: a canary that computes differently loses its
    // weight at once, whatever the stage.
    if let Some((name, seq, detail)) = divergence(plan, obs).filter(|_| !rolling_back) {
        let b = Breach {
            cluster: name.clone(),
            gate: "output_hash_divergence".into(),
            value: seq as f64,
            limit: plan.gates.output_hash_divergence as f64,
        };
        out.push(
            Act::Breach,
            None,
            format!("{name}: output hash differs from stable's at seq {seq}: {detail}"),
        );
        // Stable alone, whatever passed before: the canary's output is
        // wrong, not slow.
        rollback(
            s,
            out,
            stable_alone(plan),
            format!("{name} diverged from stable at seq {seq}: {detail}"),
            Some(now),
            vec![b],
            now,
        );
        return;
    }

    // Weights changed on an edge by hand (outside an apply).
    if !matches!(s.stage, Stage::Apply { .. }) {
        if let Some(t) = &s.target {
            if let Some(i) = obs
                .edges
                .iter()
                .position(|e| e.as_ref().is_some_and(|w| w != t))
            {
                pause(
                    s,
                    out,
                    format!(
                        "edge {} carries weights the controller did not set",
                        plan.edges[i]
                    ),
                );
                return;
            }
        }
    }

    match s.stage.clone() {
        Stage::Apply {
            since_ms,
            weights,
            then,
        } => {
            let all =
                !obs.edges.is_empty() && obs.edges.iter().all(|e| e.as_ref() == Some(&weights));
            if all {
                match then {
                    Then::Baseline => {
                        s.stage = Stage::Baseline { since_ms: now };
                    }
                    Then::Hold => {
                        s.stage = Stage::Hold { since_ms: now };
                        s.judged.clear();
                        s.breach_since_ms = None;
                        s.shared_breach_since_ms = None;
                        s.promote = false;
                        let hold = plan.phases[s.phase].hold;
                        out.push(
                            Act::Hold,
                            Some(weights),
                            format!(
                                "every edge carries the weights; holding {} s",
                                hold.as_secs()
                            ),
                        );
                    }
                    Then::RolledBack => {
                        s.stage = Stage::RolledBack {
                            reason: "every edge carries the rollback weights".into(),
                        };
                    }
                }
            } else if now.saturating_sub(since_ms) >= limits.apply_ms {
                let missing: Vec<&str> = plan
                    .edges
                    .iter()
                    .zip(obs.edges.iter().chain(std::iter::repeat(&None)))
                    .filter(|(_, e)| e.as_ref() != Some(&weights))
                    .map(|(u, _)| u.as_str())
                    .collect();
                pause(
                    s,
                    out,
                    format!(
                        "edges not carrying the weights after {} ms: {}",
                        now - since_ms,
                        missing.join(", ")
                    ),
                );
            }
        }
        Stage::Baseline { since_ms } => {
            if now.saturating_sub(since_ms) >= plan.baseline_window.as_millis() as u64 {
                out.push(Act::Pass, None, "baseline observed".into());
                s.stage = Stage::Prepare {
                    since_ms: now,
                    started: BTreeMap::new(),
                };
            }
        }
        Stage::Prepare { since_ms, started } => {
            prepare(plan, limits, s, out, obs, now, since_ms, started)
        }
        Stage::Hold { since_ms } => hold(plan, &limits, s, out, obs, now, since_ms),
        Stage::New | Stage::Paused { .. } | Stage::RolledBack { .. } | Stage::Done => {}
    }
}

/// The first canary cluster whose output hash differs from stable's.
fn divergence(plan: &Plan, obs: &Observation) -> Option<(String, u64, String)> {
    plan.clusters
        .iter()
        .filter(|c| c.version == Version::Canary)
        .find_map(|c| match &obs.clusters.get(&c.name)?.hash {
            HashCheck::Differs { seq, detail } => Some((c.name.clone(), *seq, detail.clone())),
            _ => None,
        })
}

#[allow(clippy::too_many_arguments)] // One caller; the stage's own fields.
fn prepare(
    plan: &Plan,
    limits: Limits,
    s: &mut State,
    out: &mut Out<'_>,
    obs: &Observation,
    now: u64,
    since_ms: u64,
    mut started: BTreeMap<String, u64>,
) {
    let target = weights_of(plan, s.phase);
    let current = s.target.clone().unwrap_or_default();
    let mut waiting = Vec::new();
    for c in &plan.clusters {
        let gets = target.get(&c.name).copied().unwrap_or(0) > 0;
        if !gets {
            continue;
        }
        let view = obs.clusters.get(&c.name);
        let ready = view.is_some_and(|v| v.nodes > 0 && v.nodes_ready == v.nodes);
        // A cold cluster is started before its first weight.
        if c.start == Start::Cold
            && !s.cold_started_ms.contains_key(&c.name)
            && current.get(&c.name).copied().unwrap_or(0) == 0
        {
            match started.get(&c.name) {
                None => {
                    started.insert(c.name.clone(), now);
                    out.push(
                        Act::StartCluster(c.name.clone()),
                        None,
                        format!("{} starts cold before its first weight", c.name),
                    );
                    waiting.push(format!("{}: starting", c.name));
                    continue;
                }
                Some(&t0) if ready => {
                    s.cold_started_ms.insert(c.name.clone(), now - t0);
                }
                Some(_) => {
                    waiting.push(format!("{}: nodes not ready", c.name));
                    continue;
                }
            }
        }
        if c.version != Version::Canary {
            continue;
        }
        // Shadow verification: every node ready, caught up, and agreeing
        // with stable at a common checkpoint.
        let Some(v) = view else {
            waiting.push(format!("{}: no observation", c.name));
            continue;
        };
        let lag_ok = plan
            .gates
            .replica_lag_seq_max
            .is_none_or(|m| v.lag_max <= m);
        let agrees = matches!(v.hash, HashCheck::Agrees { .. });
        if !(ready && lag_ok && agrees) {
            waiting.push(format!(
                "{}: {} of {} nodes ready, lag {}, hash {:?}",
                c.name, v.nodes_ready, v.nodes, v.lag_max, v.hash
            ));
        }
    }
    if waiting.is_empty() {
        let verified: Vec<String> = plan
            .clusters
            .iter()
            .filter(|c| c.version == Version::Canary && target.get(&c.name) > Some(&0))
            .map(|c| c.name.clone())
            .collect();
        if !verified.is_empty() {
            out.push(
                Act::Verify,
                None,
                format!("verified against stable: {}", verified.join(", ")),
            );
        }
        let reason = match s.passed {
            Some(p) => format!("phase {} passed", plan.phases[p].name),
            None => "baseline passed".into(),
        };
        apply(s, out, target, Then::Hold, reason, now);
    } else if now.saturating_sub(since_ms) >= limits.prepare_ms {
        pause(
            s,
            out,
            format!(
                "not ready for weight after {} ms: {}",
                now - since_ms,
                waiting.join("; ")
            ),
        );
    } else {
        s.stage = Stage::Prepare { since_ms, started };
    }
}

fn hold(
    plan: &Plan,
    limits: &Limits,
    s: &mut State,
    out: &mut Out<'_>,
    obs: &Observation,
    now: u64,
    since_ms: u64,
) {
    let weights = s.target.clone().unwrap_or_default();
    let weighted: Vec<&str> = weights
        .iter()
        .filter(|(_, &w)| w > 0)
        .map(|(n, _)| n.as_str())
        .collect();
    let mut breaches = Vec::new();
    for name in &weighted {
        let Some(v) = obs.clusters.get(*name) else {
            continue;
        };
        if v.judged.is_some() {
            s.judged.insert((*name).to_owned());
        }
        breaches.extend(v.breaches.iter().cloned());
        if let Some(m) = plan.gates.replica_lag_seq_max {
            if v.lag_max > m {
                breaches.push(Breach {
                    cluster: (*name).to_owned(),
                    gate: "replica_lag_seq_max".into(),
                    value: v.lag_max as f64,
                    limit: m as f64,
                });
            }
        }
    }
    // A gate that a stable cluster breaches is shared: the canary's
    // breach of that same gate is not the canary's doing, and neither is
    // stable's own. What remains is the canary's.
    let stable: BTreeSet<&str> = plan
        .clusters
        .iter()
        .filter(|c| c.version == Version::Stable)
        .map(|c| c.name.as_str())
        .collect();
    let shared_gates: BTreeSet<String> = breaches
        .iter()
        .filter(|b| stable.contains(b.cluster.as_str()))
        .map(|b| b.gate.clone())
        .collect();
    let (shared, breaches): (Vec<Breach>, Vec<Breach>) = breaches
        .into_iter()
        .partition(|b| shared_gates.contains(&b.gate));
    if shared.is_empty() {
        s.shared_breach_since_ms = None;
    } else {
        let first = *s.shared_breach_since_ms.get_or_insert(now);
        if first == now {
            out.list.push(Decision {
                act: Act::Breach,
                phase: out.phase_name(),
                weights: None,
                reason: format!(
                    "stable breaches too, so it is not the canary's doing: holding (the phase does not pass); paused if it lasts {} s",
                    limits.systemic_ms / 1000
                ),
                breach_started_ms: Some(now),
                breaches: shared.clone(),
            });
        }
        if now - first >= limits.systemic_ms {
            s.shared_breach_since_ms = None;
            s.breach_since_ms = None;
            pause(
                s,
                out,
                format!(
                    "a breach that stable shares lasted {} ms: {}",
                    now - first,
                    shared
                        .iter()
                        .map(|b| format!("{} {} {:.3} > {}", b.cluster, b.gate, b.value, b.limit))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            return;
        }
    }
    if !breaches.is_empty() {
        let first = *s.breach_since_ms.get_or_insert(now);
        if first == now {
            out.list.push(Decision {
                act: Act::Breach,
                phase: out.phase_name(),
                weights: None,
                reason: "a gate does not hold".into(),
                breach_started_ms: Some(now),
                breaches: breaches.clone(),
            });
        }
        if now - first >= plan.gates.breach_for.as_millis() as u64 {
            match plan.on_failure {
                OnFailure::Rollback => {
                    let w = rollback_weights(plan, s);
                    rollback(
                        s,
                        out,
                        w,
                        format!("breach for {} ms", now - first),
                        Some(first),
                        breaches,
                        now,
                    );
                }
                OnFailure::Pause => {
                    s.breach_since_ms = None;
                    pause(
                        s,
                        out,
                        format!("breach for {} ms (on_failure: pause)", now - first),
                    );
                }
            }
        }
        return;
    }
    s.breach_since_ms = None;
    if !shared.is_empty() {
        return;
    }
    let hold_ms = plan.phases[s.phase].hold.as_millis() as u64;
    let over = s.promote || now.saturating_sub(since_ms) >= hold_ms;
    let all_judged = weighted.iter().all(|n| s.judged.contains(*n));
    if over && !all_judged && now.saturating_sub(since_ms + hold_ms) >= limits.unjudged_ms {
        let unjudged: Vec<&str> = weighted
            .iter()
            .copied()
            .filter(|n| !s.judged.contains(*n))
            .collect();
        pause(
            s,
            out,
            format!(
                "never judged in {} ms past the hold: {} (fewer than min_requests {} requests in every window)",
                now - since_ms - hold_ms,
                unjudged.join(", "),
                plan.gates.min_requests
            ),
        );
        return;
    }
    if !over || !all_judged {
        return;
    }
    out.push(
        Act::Pass,
        None,
        format!("phase {} passed", plan.phases[s.phase].name),
    );
    s.passed = Some(s.phase);
    s.promote = false;
    if s.phase + 1 == plan.phases.len() {
        s.stage = Stage::Done;
        out.push(Act::Done, Some(weights), "every phase passed".into());
        return;
    }
    s.phase += 1;
    out.phase = s.phase;
    s.stage = Stage::Prepare {
        since_ms: now,
        started: BTreeMap::new(),
    };
}
