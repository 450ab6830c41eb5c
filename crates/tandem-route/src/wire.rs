//! The compact binary form of one routing question, as the Worker's
//! JavaScript writes it into the WebAssembly module's memory.
//!
//! All integers little-endian:
//!
//! ```text
//! u8   version, 1
//! u8   pin: 0 none, 1 stable, 2 canary
//! u8   1 if an account follows, else 0
//! u64  request key (used without an account)
//! u64  excluded clusters, bit i = cluster i
//! u32  account length, then that many account bytes (length 0 if none)
//! u8   cluster count (at most 64), then per cluster:
//!        u8 role (1 stable, 2 canary), u32 weight, u8 name length, name (UTF-8)
//! ```
//!
//! The input must end exactly after the last cluster. [`route_wire`] answers
//! the cluster's index, [`NO_CLUSTER`] or [`MALFORMED`]; it never panics.

use crate::{route_excluding, Cluster, Request, Role, MAX_CLUSTERS};

/// The wire version this decoder reads.
pub const VERSION: u8 = 1;
/// [`route_wire`]'s answer when no cluster may serve the request.
pub const NO_CLUSTER: i32 = -1;
/// [`route_wire`]'s answer for input that does not follow the format.
pub const MALFORMED: i32 = -2;

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.rest.len() < n {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn role(b: u8) -> Option<Role> {
    match b {
        1 => Some(Role::Stable),
        2 => Some(Role::Canary),
        _ => None,
    }
}

/// Decodes one question and answers it with [`route_excluding`].
pub fn route_wire(input: &[u8]) -> i32 {
    // A fixed array (no allocation in the wasm build): `decode` fills the
    // first `n` slots; the rest keep this empty value and are never read.
    let empty = Cluster {
        name: "",
        role: Role::Stable,
        weight: 0,
    };
    let mut clusters = [empty; MAX_CLUSTERS];
    match decode(input, &mut clusters) {
        Some((n, req, excluded)) => match route_excluding(&clusters[..n], &req, excluded) {
            // n ≤ 64, so the index fits.
            Some(i) => i as i32,
            None => NO_CLUSTER,
        },
        None => MALFORMED,
    }
}

fn decode<'a>(
    input: &'a [u8],
    clusters: &mut [Cluster<'a>; MAX_CLUSTERS],
) -> Option<(usize, Request<'a>, u64)> {
    let mut r = Reader { rest: input };
    if r.u8()? != VERSION {
        return None;
    }
    let pin = match r.u8()? {
        0 => None,
        b => Some(role(b)?),
    };
    let has_account = match r.u8()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    let key = r.u64()?;
    let excluded = r.u64()?;
    let account_len = usize::try_from(r.u32()?).ok()?;
    let account = r.take(account_len)?;
    if !has_account && account_len != 0 {
        return None;
    }
    let n = usize::from(r.u8()?);
    if n > MAX_CLUSTERS {
        return None;
    }
    for slot in clusters.iter_mut().take(n) {
        let role = role(r.u8()?)?;
        let weight = r.u32()?;
        let name_len = usize::from(r.u8()?);
        let name = core::str::from_utf8(r.take(name_len)?).ok()?;
        *slot = Cluster { name, role, weight };
    }
    if !r.rest.is_empty() {
        return None;
    }
    let req = Request {
        pin,
        account: has_account.then_some(account),
        key,
    };
    Some((n, req, excluded))
}
