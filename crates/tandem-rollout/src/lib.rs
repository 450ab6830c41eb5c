//! `tandem rollout`: moves client traffic between clusters step by step
//! (`contracts/rollout-plan.md`), judges every step, and rolls back by
//! itself.
//!
//! - `plan`, `duration`: the plan file, its rules and durations
//!   (`tandem rollout check`).
//! - `decide`: the decision core; `judge`: the statistical judge;
//!   `window`: judging windows that do not overlap; `observe`: readings
//!   to what `decide` sees; `timeline`: the timeline's lines.
//! - `cloudflare`, `consul`, `kubernetes`: those layers' requests and
//!   answers; `https`, `kubeconfig` (with `exec_credential`, its
//!   credential plugins), `kube_actuator`, `layers`: sending them (a
//!   StatefulSet scaled from 0 for `start: cold`, Consul and Cloudflare
//!   KV told every weight change after the edges).
//!
//! Decisions are pure (`decide(state, observations, now) -> actions`, no
//! I/O, no clock, no runtime); observers and actuators are thin shells
//! around them.

pub mod cloudflare;
pub mod consul;
pub mod decide;
pub mod duration;
pub mod exec_credential;
pub mod https;
pub mod judge;
pub mod kube_actuator;
pub mod kubeconfig;
pub mod kubernetes;
pub mod layers;
pub mod observe;
pub mod plan;
pub mod prometheus;
pub mod run;
pub mod status;
pub mod timeline;
pub mod window;
