//! `tandem demo` (`contracts/demo-report.md`).

pub mod diverge;
pub mod render;
pub mod report;
