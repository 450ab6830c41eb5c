//! Unit and property tests of the routing rules: pins, shares against
//! weights, how many accounts a weight change moves, fallback ranking, and
//! the wire decoder.

extern crate std;

use std::format;
use std::string::String;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;

const NAMES: [&str; 5] = ["aws", "gcp", "azure", "oci", "ibm"];

fn plan(weights: &[u32]) -> Vec<Cluster<'static>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| Cluster {
            name: NAMES[i],
            role: if i == 0 { Role::Stable } else { Role::Canary },
            weight,
        })
        .collect()
}

fn account(i: u32) -> String {
    format!("acct-{i}")
}

fn by_account(clusters: &[Cluster<'_>], acct: &str) -> Option<usize> {
    route(
        clusters,
        &Request {
            pin: None,
            account: Some(acct.as_bytes()),
            key: 0,
        },
    )
}

/// Per-cluster share in percent over `n` accounts.
fn shares(clusters: &[Cluster<'_>], n: u32) -> Vec<f64> {
    let mut counts = std::vec![0u32; clusters.len()];
    for i in 0..n {
        counts[by_account(clusters, &account(i)).unwrap()] += 1;
    }
    counts
        .iter()
        .map(|&c| 100.0 * f64::from(c) / f64::from(n))
        .collect()
}

/// Percent of `n` accounts that change cluster between two weight sets.
fn moved(from: &[Cluster<'_>], to: &[Cluster<'_>], n: u32) -> f64 {
    let m = (0..n)
        .filter(|&i| by_account(from, &account(i)) != by_account(to, &account(i)))
        .count();
    100.0 * m as f64 / f64::from(n)
}

#[test]
fn header_values() {
    assert_eq!(Role::from_header(b"canary"), Some(Role::Canary));
    assert_eq!(Role::from_header(b"CaNaRy"), Some(Role::Canary));
    assert_eq!(Role::from_header(b" Stable\t"), Some(Role::Stable));
    assert_eq!(Role::from_header(b"stable2"), None);
    assert_eq!(Role::from_header(b""), None);
    assert_eq!(Role::from_header("stäble".as_bytes()), None);
    assert_eq!(Role::Canary.as_str(), "canary");
}

#[test]
fn pins_choose_by_role() {
    let c = plan(&[95, 5, 0]);
    for i in 0..1000 {
        let a = account(i);
        let req = |pin| Request {
            pin,
            account: Some(a.as_bytes()),
            key: 0,
        };
        assert_eq!(route(&c, &req(Some(Role::Stable))), Some(0));
        // gcp has weight, azure has none: every canary pin goes to gcp.
        assert_eq!(route(&c, &req(Some(Role::Canary))), Some(1));
    }
    // At 100/0/0 the canaries share pinned traffic equally.
    let c = plan(&[100, 0, 0]);
    let mut gcp = 0;
    for i in 0..10_000 {
        let a = account(i);
        let req = Request {
            pin: Some(Role::Canary),
            account: Some(a.as_bytes()),
            key: 0,
        };
        match route(&c, &req) {
            Some(1) => gcp += 1,
            Some(2) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!((4_800..5_200).contains(&gcp), "{gcp}");
}

#[test]
fn nothing_eligible_is_none() {
    let stable_only = plan(&[100]);
    let req = Request {
        pin: Some(Role::Canary),
        account: Some(b"alice"),
        key: 0,
    };
    assert_eq!(route(&stable_only, &req), None);
    assert_eq!(
        route(&plan(&[0, 0]), &Request { pin: None, ..req }),
        None,
        "no weight and no pin"
    );
    assert_eq!(route(&[], &Request { pin: None, ..req }), None);
}

#[test]
fn shares_converge_to_weights() {
    for weights in [&[95, 5][..], &[95, 5, 0], &[34, 33, 33], &[45, 45, 10]] {
        let c = plan(weights);
        let s = shares(&c, 100_000);
        for (share, &w) in s.iter().zip(weights) {
            assert!((share - f64::from(w)).abs() <= 1.0, "{weights:?}: {s:?}");
        }
    }
}

#[test]
fn requests_without_account_split_by_weight() {
    let c = plan(&[70, 30, 0]);
    let mut counts = [0u32; 3];
    for key in 0..100_000u64 {
        let req = Request {
            pin: None,
            account: None,
            key,
        };
        counts[route(&c, &req).unwrap()] += 1;
    }
    assert!((69_000..71_000).contains(&counts[0]), "{counts:?}");
    assert_eq!(counts[2], 0);
}

/// The plan's phases: each change moves few accounts more than the
/// minimum (the sum of the weight increases). Two-cluster changes move
/// exactly the minimum in expectation; a change that adds a third cluster
/// while shifting the other two costs a few points more (see the `split`
/// example for the figures).
#[test]
fn plan_steps_move_close_to_the_minimum() {
    let steps: [&[u32]; 5] = [
        &[100, 0, 0],
        &[95, 5, 0],
        &[70, 30, 0],
        &[45, 45, 10],
        &[34, 33, 33],
    ];
    for pair in steps.windows(2) {
        let (a, b) = (plan(pair[0]), plan(pair[1]));
        let min: u32 = pair[0]
            .iter()
            .zip(pair[1])
            .map(|(x, y)| y.saturating_sub(*x))
            .sum();
        let m = moved(&a, &b, 100_000);
        assert!(m >= f64::from(min) - 1.0, "{pair:?}: moved {m}, min {min}");
        assert!(
            m <= f64::from(min) * 1.25 + 1.0,
            "{pair:?}: moved {m}, min {min}"
        );
    }
    // Rollback to all-stable moves exactly the canary share.
    let m = moved(&plan(&[34, 33, 33]), &plan(&[100, 0, 0]), 100_000);
    assert!((m - 66.0).abs() <= 1.0, "{m}");
}

#[test]
fn list_order_does_not_matter() {
    let c = plan(&[45, 45, 10]);
    let mut r = c.clone();
    r.reverse();
    for i in 0..2000 {
        let a = account(i);
        assert_eq!(
            c[by_account(&c, &a).unwrap()].name,
            r[by_account(&r, &a).unwrap()].name
        );
    }
}

#[test]
fn validate_refuses_bad_lists() {
    assert_eq!(validate(&[]), Err(ConfigError::Empty));
    assert_eq!(validate(&plan(&[1, 2, 3])), Ok(()));
    let mut c = plan(&[1, 2]);
    c[1].name = "aws";
    assert_eq!(validate(&c), Err(ConfigError::DuplicateName(1)));
    c[1].name = "";
    assert_eq!(validate(&c), Err(ConfigError::BadName(1)));
    let many = std::vec![c[0]; 65];
    assert_eq!(validate(&many), Err(ConfigError::TooMany(65)));
}

/// The wire form the Worker writes (see `wire.rs`).
fn encode(clusters: &[Cluster<'_>], req: &Request<'_>, excluded: u64) -> Vec<u8> {
    let mut out = std::vec![wire::VERSION];
    out.push(match req.pin {
        None => 0,
        Some(Role::Stable) => 1,
        Some(Role::Canary) => 2,
    });
    out.push(u8::from(req.account.is_some()));
    out.extend(req.key.to_le_bytes());
    out.extend(excluded.to_le_bytes());
    let a = req.account.unwrap_or_default();
    out.extend((a.len() as u32).to_le_bytes());
    out.extend(a);
    out.push(clusters.len() as u8);
    for c in clusters {
        out.push(if c.role == Role::Stable { 1 } else { 2 });
        out.extend(c.weight.to_le_bytes());
        out.push(c.name.len() as u8);
        out.extend(c.name.as_bytes());
    }
    out
}

#[test]
fn wire_refuses_malformed_input() {
    let c = plan(&[70, 30, 0]);
    let req = Request {
        pin: None,
        account: Some("zoë".as_bytes()),
        key: 7,
    };
    let good = encode(&c, &req, 0);
    assert_eq!(wire::route_wire(&good), route(&c, &req).unwrap() as i32);
    for cut in 0..good.len() {
        assert_eq!(wire::route_wire(&good[..cut]), wire::MALFORMED, "cut {cut}");
    }
    let mut long = good.clone();
    long.push(0);
    assert_eq!(wire::route_wire(&long), wire::MALFORMED);
    let mut bad_version = good.clone();
    bad_version[0] = 2;
    assert_eq!(wire::route_wire(&bad_version), wire::MALFORMED);
    let none = encode(&plan(&[0, 0]), &req, 0);
    assert_eq!(wire::route_wire(&none), wire::NO_CLUSTER);
}

proptest! {
    /// An account only ever moves to a cluster whose weight grew by a
    /// larger factor than the weight of the cluster it leaves: never
    /// between clusters that kept their weights, never away from a
    /// cluster that grew the most.
    #[test]
    fn accounts_move_only_towards_relative_growth(
        from in proptest::collection::vec(0u32..=100, 2..=5),
        to_seed in proptest::collection::vec(0u32..=100, 5),
        accounts in proptest::collection::vec(any::<u64>(), 64),
    ) {
        let to: Vec<u32> = to_seed[..from.len()].to_vec();
        let (a, b) = (plan(&from), plan(&to));
        for acct in accounts {
            let key = acct.to_le_bytes();
            let (x, y) = (by_account_bytes(&a, &key), by_account_bytes(&b, &key));
            if let (Some(i), Some(j)) = (x, y) {
                if i != j {
                    // w'_j / w_j > w'_i / w_i, with w_j = 0 as infinite growth.
                    let lhs = u64::from(to[j]) * u64::from(from[i]);
                    let rhs = u64::from(to[i]) * u64::from(from[j]);
                    prop_assert!(from[j] == 0 || lhs > rhs,
                        "moved {i}->{j}: {from:?} -> {to:?}");
                }
            }
        }
    }

    /// The ranking lists every eligible cluster once, best first, and
    /// excluding a prefix of it yields the next entry.
    #[test]
    fn ranking_is_the_fallback_order(
        weights in proptest::collection::vec(0u32..=10, 1..=5),
        pin in prop_oneof![Just(None), Just(Some(Role::Stable)), Just(Some(Role::Canary))],
        acct in proptest::option::of(any::<[u8; 6]>()),
        key in any::<u64>(),
    ) {
        let c = plan(&weights);
        let req = Request { pin, account: acct.as_ref().map(|a| &a[..]), key };
        let order: Vec<usize> = ranked(&c, req).collect();
        prop_assert_eq!(order.first().copied(), route(&c, &req));
        let mut excluded = 0u64;
        for &i in &order {
            prop_assert_eq!(route_excluding(&c, &req, excluded), Some(i));
            excluded |= 1 << i;
        }
        let mut sorted = order.clone();
        sorted.sort_unstable();
        sorted.dedup();
        prop_assert_eq!(sorted.len(), order.len());
        for (i, cl) in c.iter().enumerate() {
            let eligible = match pin {
                None => cl.weight > 0,
                Some(role) => cl.role == role,
            };
            prop_assert_eq!(order.contains(&i), eligible, "cluster {}", i);
        }
        // The wire path gives the same answer.
        let want = route(&c, &req).map_or(wire::NO_CLUSTER, |i| i as i32);
        prop_assert_eq!(wire::route_wire(&encode(&c, &req, 0)), want);
    }
}

fn by_account_bytes(clusters: &[Cluster<'_>], acct: &[u8]) -> Option<usize> {
    route(
        clusters,
        &Request {
            pin: None,
            account: Some(acct),
            key: 0,
        },
    )
}
