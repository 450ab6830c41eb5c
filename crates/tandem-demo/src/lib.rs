//! `tandem demo` (`contracts/demo-report.md`): the source's multi-cloud
//! release run for real on one machine, measured and reported.
//!
//! - [`world`]: the processes (tansu, nine nodes, link proxies, the edge,
//!   the controller) and their files;
//! - [`link`]: the cross-cloud link, a TCP proxy with a one-way delay;
//! - [`scenario`]: one scenario run, its fault hooks and its report;
//! - [`measure`]: the client's samples cut into phases, series and the
//!   rollback window;
//! - [`diverge`] and [`replay`]: the first command a diverged canary
//!   computed differently;
//! - [`cpu`]: where the run's CPU went, by part (broker, nodes, edge, ...);
//! - [`report`] and [`render`]: the JSON report and `report.md`/`.html`;
//! - [`worker`]: `--worker`, the Cloudflare Worker in workerd in front of
//!   the edge;
//! - [`cli`]: the `tandem demo` command.

pub mod cli;
pub mod cpu;
pub mod diverge;
pub mod link;
pub mod measure;
pub mod render;
pub mod replay;
pub mod report;
pub mod scenario;
pub mod worker;
pub mod world;

pub use cli::{run_cli, UsageError, USAGE};
