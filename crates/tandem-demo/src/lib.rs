//! `tandem demo` (`contracts/demo-report.md`).

pub mod render;
pub mod report;
