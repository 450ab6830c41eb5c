//! Runs the backend-neutral conformance suite against [`FileLog`], once with
//! default settings and once with tiny segments (so rolling, multi-segment
//! reads and truncation are exercised), plus checks specific to the file
//! backend's segment layout.

mod common;

use common::TempDir;
use tandem_log::conformance::{self, Fixture};
use tandem_log::{FileLog, FileLogConfig, Log};

struct FileFixture {
    dir: TempDir,
    config: FileLogConfig,
}

impl Fixture for FileFixture {
    fn open(&self) -> Box<dyn Log> {
        Box::new(FileLog::open(self.dir.path(), self.config.clone()).expect("open FileLog"))
    }
}

fn default_fixture() -> Box<dyn Fixture> {
    Box::new(FileFixture {
        dir: TempDir::new("conf"),
        config: FileLogConfig::default(),
    })
}

fn small_segments() -> FileLogConfig {
    FileLogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 512,
        ..FileLogConfig::default()
    }
}

fn small_fixture() -> Box<dyn Fixture> {
    Box::new(FileFixture {
        dir: TempDir::new("conf-small"),
        config: small_segments(),
    })
}

macro_rules! suite {
    ($($check:ident),* $(,)?) => {
        mod default_segments {
            $(#[test] fn $check() { tandem_log::conformance::$check(&super::default_fixture); })*
        }
        mod small_segments {
            $(#[test] fn $check() { tandem_log::conformance::$check(&super::small_fixture); })*
        }
    };
}

suite!(
    empty_log,
    ordering,
    durability_across_reopen,
    read_from_any_seq,
    follow_the_tail,
    batch_atomicity,
    large_and_empty_payloads,
    concurrent_appenders,
    truncate_before,
);

/// With small segments, `truncate_before` really deletes files and moves
/// `first_seq`, and the survivors reopen.
#[test]
fn truncate_before_drops_whole_segments() {
    let dir = TempDir::new("trunc");
    let count = || std::fs::read_dir(dir.path()).unwrap().count();
    let log = FileLog::open(dir.path(), small_segments()).unwrap();
    let p = [1u8; 100];
    for _ in 0..100 {
        log.append(&[&p[..]; 10]).unwrap();
    }
    let before = count();
    assert!(before > 10, "expected many segments, got {before}");
    log.truncate_before(900).unwrap();
    let first = log.first_seq();
    assert!(first > 800 && first <= 900, "first_seq {first}");
    assert!(count() < before);
    drop(log);
    let log = FileLog::open(dir.path(), small_segments()).unwrap();
    assert_eq!((log.first_seq(), log.last_seq()), (first, 1000));
    assert_eq!(
        conformance::read_all(&log, first).len() as u64,
        1001 - first
    );
}

/// Segment files are named by their first seq and rolled at the configured
/// size, and a batch never straddles two segments.
#[test]
fn segments_are_named_by_first_seq_and_hold_whole_batches() {
    let dir = TempDir::new("names");
    let log = FileLog::open(dir.path(), small_segments()).unwrap();
    let p = [2u8; 300];
    for _ in 0..40 {
        log.append(&[&p[..]; 3]).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".seg"))
        .collect();
    names.sort();
    assert_eq!(names[0], "00000000000000000001.seg");
    for name in &names {
        let base: u64 = name.trim_end_matches(".seg").parse().unwrap();
        assert_eq!((base - 1) % 3, 0, "segment {name} starts inside a batch");
        let len = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(len <= 8 * 1024, "segment {name} is {len} bytes");
    }
}
