//! `tandem demo` (`contracts/demo-report.md`).

pub mod report;
