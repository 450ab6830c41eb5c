//! `tandem rollout`: moves client traffic between clusters step by step
//! (`contracts/rollout-plan.md`), judges every step, and rolls back by
//! itself.
//!
//! - `plan`: the plan file, its rules and durations (`tandem rollout
//!   check`).
//!
//! Decisions are pure (`decide(state, observations, now) -> actions`, no
//! I/O, no clock, no runtime); observers and actuators are thin shells
//! around them.

pub mod cloudflare;
pub mod consul;
pub mod decide;
pub mod duration;
pub mod judge;
pub mod kubernetes;
pub mod observe;
pub mod plan;
pub mod timeline;
pub mod window;
