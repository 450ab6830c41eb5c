//! Helpers shared by the integration tests: unique temporary directories
//! that remove themselves (shared with other backends' tests).

pub use tandem_log::conformance::TempDir;
