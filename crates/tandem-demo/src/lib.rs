//! `tandem demo` (`contracts/demo-report.md`).

pub mod report;
pub mod render;
