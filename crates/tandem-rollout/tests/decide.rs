//! The decision core on recorded observation sequences: a small world in
//! this file plays the edges and clusters (weights take effect when set,
//! a cold cluster gets ready some seconds after it is started, gates and
//! hashes are what each test says), and `decide` is called every interval
//! as the controller's shell would. No clock, no sockets.

use std::collections::BTreeMap;
use std::time::Duration;

use tandem_rollout::decide::{
    decide, stable_alone, Act, Breach, ClusterView, Command, Decision, HashCheck, Input, Limits,
    Observation, Stage, State, Weights,
};
use tandem_rollout::plan::{Cluster, Gates, MetricsSource, OnFailure, Phase, Plan, Start, Version};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The seed plan at a time scale: holds of 5 s, a baseline of 10 s.
fn plan() -> Plan {
    let cluster = |name: &str, version, start| Cluster {
        name: name.into(),
        version,
        zones: vec![
            format!("{name}-1"),
            format!("{name}-2"),
            format!("{name}-3"),
        ],
        start,
    };
    let phase = |name: &str, hold, w: [u32; 3]| Phase {
        name: name.into(),
        hold: secs(hold),
        weights: vec![
            ("aws".into(), w[0]),
            ("gcp".into(), w[1]),
            ("azure".into(), w[2]),
        ],
    };
    Plan {
        release: "match-engine v2".into(),
        clusters: vec![
            cluster("aws", Version::Stable, Start::Running),
            cluster("gcp", Version::Canary, Start::Running),
            cluster("azure", Version::Canary, Start::Cold),
        ],
        edges: vec!["http://e1".into(), "http://e2".into()],
        metrics: MetricsSource::Scrape { interval: secs(1) },
        baseline_window: secs(10),
        gates: Gates {
            latency_p99_ms_max: Some(15.0),
            latency_p99_vs_baseline_max: Some(1.5),
            error_ratio_max: Some(0.001),
            replica_lag_seq_max: Some(1000),
            output_hash_divergence: 0,
            min_requests: 200,
            breach_for: secs(2),
        },
        phases: vec![
            phase("warm-up", 5, [100, 0, 0]),
            phase("canary", 5, [95, 5, 0]),
            phase("expand", 5, [70, 30, 0]),
            phase("balance", 5, [45, 45, 10]),
            phase("done", 0, [34, 33, 33]),
        ],
        on_failure: OnFailure::Rollback,
    }
}

fn w(aws: u32, gcp: u32, azure: u32) -> Weights {
    [("aws", aws), ("gcp", gcp), ("azure", azure)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// The world the controller acts on.
struct World {
    plan: Plan,
    state: State,
    now: u64,
    edges: Vec<Option<Weights>>,
    /// Edges that ignore writes (unreachable).
    down: Vec<bool>,
    /// Per cluster: running, and since when (ms) its nodes are ready.
    ready_at: BTreeMap<String, Option<u64>>,
    /// What every running cluster reports, unless a test overrides it.
    hash: BTreeMap<String, HashCheck>,
    breaching: BTreeMap<String, bool>,
    judged: bool,
    /// Observations go missing while set.
    silent: bool,
    log: Vec<(u64, Decision)>,
}

impl World {
    fn new(plan: Plan) -> World {
        let ready_at = plan
            .clusters
            .iter()
            .map(|c| (c.name.clone(), (c.start == Start::Running).then_some(0)))
            .collect();
        let edges = vec![Some(w(100, 0, 0)); plan.edges.len()];
        World {
            down: vec![false; plan.edges.len()],
            plan,
            state: State::new(),
            now: 0,
            edges,
            ready_at,
            hash: BTreeMap::new(),
            breaching: BTreeMap::new(),
            judged: true,
            silent: false,
            log: Vec::new(),
        }
    }

    fn observe(&self) -> Observation {
        let clusters = self
            .plan
            .clusters
            .iter()
            .map(|c| {
                let ready = self.ready_at[&c.name].is_some_and(|t| t <= self.now);
                let running = self.ready_at[&c.name].is_some();
                let breaches = if self.breaching.get(&c.name) == Some(&true) {
                    vec![Breach {
                        cluster: c.name.clone(),
                        gate: "latency_p99_ms_max".into(),
                        value: 40.0,
                        limit: 15.0,
                    }]
                } else {
                    Vec::new()
                };
                let view = ClusterView {
                    nodes: if running { 3 } else { 0 },
                    nodes_ready: if ready { 3 } else { 0 },
                    lag_max: 0,
                    hash: self.hash.get(&c.name).cloned().unwrap_or(if ready {
                        HashCheck::Agrees { seq: 1000 }
                    } else {
                        HashCheck::Unknown
                    }),
                    judged: self.judged.then_some(500),
                    breaches,
                    p99_ms: Some(3.0),
                    error_ratio: Some(0.0),
                };
                (c.name.clone(), view)
            })
            .collect();
        Observation {
            clusters,
            edges: self.edges.clone(),
        }
    }

    fn feed(&mut self, input: Input) {
        let limits = Limits::for_plan(&self.plan);
        let (next, decisions) = decide(&self.plan, limits, &self.state, &input, self.now);
        self.state = next;
        for d in decisions {
            match &d.act {
                Act::SetWeights | Act::Rollback => {
                    let ws = d.weights.clone().expect("weights");
                    for (e, down) in self.edges.iter_mut().zip(&self.down) {
                        if !down {
                            *e = Some(ws.clone());
                        }
                    }
                }
                Act::StartCluster(name) => {
                    // Ready 3 s after it is started.
                    self.ready_at.insert(name.clone(), Some(self.now + 3_000));
                }
                _ => {}
            }
            self.log.push((self.now, d));
        }
    }

    /// One interval: the shell's tick.
    fn tick(&mut self) {
        self.now += 1_000;
        let obs = (!self.silent).then(|| self.observe());
        self.feed(Input::Tick(obs));
    }

    fn run_until(&mut self, limit_ms: u64, stop: impl Fn(&World) -> bool) {
        while self.now < limit_ms && !stop(self) {
            self.tick();
        }
    }

    fn acts(&self) -> Vec<&str> {
        self.log.iter().map(|(_, d)| d.act.as_str()).collect()
    }

    fn weights_set(&self) -> Vec<Weights> {
        self.log
            .iter()
            .filter(|(_, d)| matches!(d.act, Act::SetWeights | Act::Rollback))
            .filter_map(|(_, d)| d.weights.clone())
            .collect()
    }

    fn phase(&self) -> &str {
        &self.plan.phases[self.state.phase].name
    }
}

#[test]
fn the_seed_plan_is_promoted_phase_by_phase() {
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| w.state.stage == Stage::Done);
    assert_eq!(wd.state.stage, Stage::Done, "{:?}", wd.acts());
    assert_eq!(
        wd.weights_set(),
        vec![
            w(100, 0, 0),
            w(100, 0, 0),
            w(95, 5, 0),
            w(70, 30, 0),
            w(45, 45, 10),
            w(34, 33, 33)
        ]
    );
    assert!(wd.edges.iter().all(|e| e.as_ref() == Some(&w(34, 33, 33))));
    // The cold cluster is started before its first weight, and its start
    // time recorded.
    let start = wd
        .log
        .iter()
        .position(|(_, d)| d.act == Act::StartCluster("azure".into()))
        .expect("azure started");
    let first_weight = wd
        .log
        .iter()
        .position(|(_, d)| d.weights.as_ref().is_some_and(|ws| ws["azure"] > 0))
        .expect("azure weighted");
    assert!(start < first_weight);
    assert_eq!(wd.state.cold_started_ms.get("azure"), Some(&3_000));
    // Every canary weight came after a verify in the same phase.
    for (i, (_, d)) in wd.log.iter().enumerate() {
        if d.act == Act::SetWeights && d.weights.as_ref().is_some_and(|ws| ws["gcp"] > 0) {
            assert!(
                wd.log[..i]
                    .iter()
                    .rev()
                    .take(3)
                    .any(|(_, p)| p.act == Act::Verify),
                "weight without verification at {i}: {:?}",
                wd.acts()
            );
        }
    }
    // Contract names only.
    let names = [
        "baseline",
        "verify",
        "start_cluster",
        "set_weights",
        "hold",
        "pass",
        "done",
    ];
    assert!(
        wd.acts().iter().all(|a| names.contains(a)),
        "{:?}",
        wd.acts()
    );
}

#[test]
fn a_canary_that_diverges_never_gets_weight_and_the_seq_is_reported() {
    let mut wd = World::new(plan());
    wd.hash.insert(
        "gcp".into(),
        HashCheck::Differs {
            seq: 4242,
            detail: "place o7: stable accepted, canary rejected limit".into(),
        },
    );
    wd.run_until(100_000, |w| {
        matches!(w.state.stage, Stage::RolledBack { .. })
    });
    assert!(
        matches!(wd.state.stage, Stage::RolledBack { .. }),
        "{:?}",
        wd.acts()
    );
    assert!(wd.weights_set().iter().all(|ws| ws["gcp"] == 0));
    let rb = wd
        .log
        .iter()
        .find(|(_, d)| d.act == Act::Rollback)
        .expect("rollback")
        .1
        .clone();
    assert!(
        rb.reason.contains("4242") && rb.reason.contains("canary rejected"),
        "{rb:?}"
    );
    assert_eq!(rb.weights, Some(stable_alone(&wd.plan)));
}

#[test]
fn a_breach_that_lasts_breach_for_rolls_back_to_the_last_passed_phase() {
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| {
        w.phase() == "canary" && matches!(w.state.stage, Stage::Hold { .. })
    });
    let t0 = wd.now + 1_000;
    wd.breaching.insert("gcp".into(), true);
    wd.run_until(200_000, |w| {
        matches!(w.state.stage, Stage::RolledBack { .. })
    });
    let (at, rb) = wd
        .log
        .iter()
        .find(|(_, d)| d.act == Act::Rollback)
        .cloned()
        .expect("rolled back");
    assert_eq!(rb.breach_started_ms, Some(t0));
    assert_eq!(
        at - t0,
        2_000,
        "rollback exactly breach_for after the first breach"
    );
    assert_eq!(rb.weights, Some(w(100, 0, 0)), "warm-up passed last");
    assert_eq!(rb.breaches[0].cluster, "gcp");
    assert!(wd.edges.iter().all(|e| e.as_ref() == Some(&w(100, 0, 0))));
}

#[test]
fn a_breach_shorter_than_breach_for_does_not_roll_back() {
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| {
        w.phase() == "canary" && matches!(w.state.stage, Stage::Hold { .. })
    });
    wd.breaching.insert("gcp".into(), true);
    wd.tick();
    wd.tick();
    wd.breaching.insert("gcp".into(), false);
    wd.run_until(200_000, |w| w.state.stage == Stage::Done);
    assert_eq!(wd.state.stage, Stage::Done, "{:?}", wd.acts());
    assert!(wd.acts().contains(&"breach") && !wd.acts().contains(&"rollback"));
}

#[test]
fn a_breach_that_stable_shares_holds_the_phase_instead_of_rolling_back() {
    // The whole system slows (a broker restart, a noisy host): stable and
    // the canary breach the same gate. Moving traffic to stable would not
    // end it; the phase holds and passes once it clears.
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| {
        w.phase() == "expand" && matches!(w.state.stage, Stage::Hold { .. })
    });
    wd.breaching.insert("gcp".into(), true);
    wd.breaching.insert("aws".into(), true);
    let before = wd.log.len();
    for _ in 0..20 {
        wd.tick();
    }
    assert_eq!(wd.phase(), "expand", "{:?}", wd.acts());
    assert!(
        matches!(wd.state.stage, Stage::Hold { .. }),
        "{:?}",
        wd.state.stage
    );
    let since: Vec<&str> = wd.log[before..]
        .iter()
        .map(|(_, d)| d.act.as_str())
        .collect();
    assert_eq!(
        since,
        vec!["breach"],
        "one breach line, no pass, no rollback"
    );
    let said = wd
        .log
        .iter()
        .rfind(|(_, d)| d.act == Act::Breach)
        .expect("the shared breach is on the timeline");
    assert!(
        said.1.reason.contains("stable breaches too"),
        "{:?}",
        said.1
    );
    assert_eq!(said.1.breaches.len(), 2, "{:?}", said.1);
    // 20 s past a 5 s hold, and it still has not passed.
    wd.breaching.clear();
    wd.run_until(200_000, |w| w.state.stage == Stage::Done);
    assert_eq!(wd.state.stage, Stage::Done, "{:?}", wd.acts());
    assert!(!wd.acts().contains(&"rollback"));
}

#[test]
fn a_shared_breach_that_lasts_pauses_and_the_canarys_own_breach_still_rolls_back() {
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| {
        w.phase() == "expand" && matches!(w.state.stage, Stage::Hold { .. })
    });
    // Stable alone breaching is not the canary's doing either.
    wd.breaching.insert("aws".into(), true);
    let t0 = wd.now + 1_000;
    wd.run_until(200_000, |w| matches!(w.state.stage, Stage::Paused { .. }));
    let (at, p) = wd.log.last().cloned().expect("paused");
    assert_eq!(p.act, Act::Pause);
    assert_eq!(at - t0, Limits::for_plan(&wd.plan).systemic_ms, "{p:?}");
    assert!(p.reason.contains("aws latency_p99_ms_max"), "{p:?}");
    assert!(wd.edges.iter().all(|e| e.as_ref() == Some(&w(70, 30, 0))));

    // The canary's own breach: rolled back after breach_for as ever.
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| {
        w.phase() == "expand" && matches!(w.state.stage, Stage::Hold { .. })
    });
    wd.breaching.insert("gcp".into(), true);
    wd.run_until(200_000, |w| {
        matches!(w.state.stage, Stage::RolledBack { .. })
    });
    assert!(
        matches!(wd.state.stage, Stage::RolledBack { .. }),
        "{:?}",
        wd.acts()
    );
    assert!(wd.edges.iter().all(|e| e.as_ref() == Some(&w(95, 5, 0))));
}

#[test]
fn on_failure_pause_keeps_the_weights() {
    let mut p = plan();
    p.on_failure = OnFailure::Pause;
    let mut wd = World::new(p);
    wd.run_until(200_000, |w| {
        w.phase() == "expand" && matches!(w.state.stage, Stage::Hold { .. })
    });
    wd.breaching.insert("gcp".into(), true);
    wd.run_until(200_000, |w| matches!(w.state.stage, Stage::Paused { .. }));
    assert!(matches!(wd.state.stage, Stage::Paused { .. }));
    assert!(wd.edges.iter().all(|e| e.as_ref() == Some(&w(70, 30, 0))));
}

#[test]
fn missing_data_holds_then_pauses_and_is_never_a_pass() {
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| {
        w.phase() == "canary" && matches!(w.state.stage, Stage::Hold { .. })
    });
    wd.silent = true;
    // Far past the hold: no pass, and a pause once the limit is reached.
    for _ in 0..20 {
        wd.tick();
    }
    assert!(
        matches!(wd.state.stage, Stage::Paused { .. }),
        "{:?}",
        wd.acts()
    );
    assert_eq!(wd.phase(), "canary");
    assert_eq!(
        wd.acts().iter().filter(|a| **a == "pass").count(),
        2,
        "baseline, warm-up"
    );
    // Not judged (too few requests) is not a pass either.
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| {
        w.phase() == "canary" && matches!(w.state.stage, Stage::Hold { .. })
    });
    wd.judged = false;
    for _ in 0..30 {
        wd.tick();
    }
    assert_eq!(wd.phase(), "canary");
    assert!(matches!(wd.state.stage, Stage::Hold { .. }));
    // ...and a hold that stays unjudged long past its end pauses (two
    // minutes past it), naming the cluster, rather than holding forever.
    let paused_at = (0..600).find(|_| {
        wd.tick();
        matches!(wd.state.stage, Stage::Paused { .. })
    });
    assert!(paused_at.is_some(), "{:?}", wd.acts());
    assert_eq!(wd.phase(), "canary");
    let (_, last) = wd.log.last().unwrap();
    assert_eq!(last.act, Act::Pause);
    assert!(
        last.reason.contains("never judged") && last.reason.contains("gcp"),
        "{}",
        last.reason
    );
    assert_eq!(
        wd.acts().iter().filter(|a| **a == "pass").count(),
        2,
        "baseline, warm-up: {:?}",
        wd.acts()
    );
}

#[test]
fn weights_changed_on_an_edge_by_hand_pause_the_rollout() {
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| {
        w.phase() == "canary" && matches!(w.state.stage, Stage::Hold { .. })
    });
    wd.edges[1] = Some(w(50, 50, 0));
    wd.tick();
    match &wd.state.stage {
        Stage::Paused { reason, .. } => assert!(reason.contains("http://e2"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unreachable_edge_pauses_instead_of_passing_on_split_weights() {
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| {
        w.phase() == "warm-up" && matches!(w.state.stage, Stage::Hold { .. })
    });
    wd.down[0] = true;
    wd.run_until(200_000, |w| matches!(w.state.stage, Stage::Paused { .. }));
    match &wd.state.stage {
        Stage::Paused { reason, .. } => assert!(reason.contains("http://e1"), "{reason}"),
        other => panic!("{other:?}"),
    }
    // Resumed once the edge is back: the same phase goes on.
    wd.down[0] = false;
    wd.feed(Input::Command(Command::Resume));
    wd.run_until(300_000, |w| w.state.stage == Stage::Done);
    assert_eq!(wd.state.stage, Stage::Done);
}

#[test]
fn a_restart_resumes_the_same_phase_and_starts_its_hold_again() {
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| {
        w.phase() == "expand" && matches!(w.state.stage, Stage::Hold { .. })
    });
    wd.tick();
    wd.tick();
    // Saved and loaded as the shell does (JSON), then restarted later.
    let saved = serde_json::to_string(&wd.state).expect("serialise");
    wd.state = serde_json::from_str(&saved).expect("deserialise");
    wd.now += 60_000;
    wd.feed(Input::Restarted);
    assert_eq!(wd.phase(), "expand");
    assert_eq!(wd.state.stage, Stage::Hold { since_ms: wd.now });
    let before = wd.weights_set().len();
    wd.tick();
    assert_eq!(
        wd.phase(),
        "expand",
        "the hold starts over: no jump forward"
    );
    assert_eq!(wd.weights_set().len(), before);
}

#[test]
fn abort_rolls_back_and_promote_ends_a_hold_early() {
    let mut wd = World::new(plan());
    wd.run_until(200_000, |w| {
        w.phase() == "canary" && matches!(w.state.stage, Stage::Hold { .. })
    });
    wd.feed(Input::Command(Command::Promote));
    wd.tick();
    assert_eq!(wd.phase(), "expand", "{:?}", wd.acts());
    wd.run_until(200_000, |w| matches!(w.state.stage, Stage::Hold { .. }));
    wd.feed(Input::Command(Command::Abort));
    wd.tick();
    assert!(
        matches!(wd.state.stage, Stage::RolledBack { .. }),
        "{:?}",
        wd.state.stage
    );
    assert!(wd.edges.iter().all(|e| e.as_ref() == Some(&w(95, 5, 0))));
}

#[test]
fn the_same_inputs_give_the_same_decisions() {
    let run = || {
        let mut wd = World::new(plan());
        wd.run_until(40_000, |_| false);
        wd.breaching.insert("gcp".into(), true);
        wd.run_until(200_000, |w| {
            matches!(w.state.stage, Stage::RolledBack { .. } | Stage::Done)
        });
        serde_json::to_string(&wd.log.iter().map(|(t, d)| (t, d)).collect::<Vec<_>>())
            .expect("json")
    };
    assert_eq!(run(), run());
}
