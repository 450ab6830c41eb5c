//! `tandem snapshot-export` as an operator runs it on a node's data
//! directory: the newest snapshot of each partition whose idempotency
//! window is written, with the files beside it, lands in the output laid
//! out for `[snapshot] seed_from`; an output that already holds a snapshot,
//! or a data directory without one, exits 1; a bad command line exits 2.

mod common;

use std::path::{Path, PathBuf};

use common::tandem;

fn scratch(name: &str) -> PathBuf {
    common::scratch(&format!("snapshot_export-{name}"))
}

fn names(d: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn the_newest_finished_snapshots_are_exported_for_a_seed() {
    let dir = scratch("export");
    let data = dir.join("data");
    let (p0, p1) = (data.join("snapshots-0"), data.join("snapshots-1"));
    std::fs::create_dir_all(&p0).unwrap();
    std::fs::create_dir_all(&p1).unwrap();
    std::fs::create_dir_all(data.join("log")).unwrap();
    let f = |seq: u64, kind: &str, ext: &str| format!("{kind}-{seq:020}.{ext}");
    for (d, name) in [
        (&p0, f(10, "snapshot", "tsnap")),
        (&p0, f(10, "answers", "bin")),
        (&p0, f(10, "checkpoints", "bin")),
        // The newest snapshot, its window still being written.
        (&p0, f(20, "snapshot", "tsnap")),
        (&p0, f(20, "checkpoints", "bin")),
        (&p0, f(20, "answers", "bin.tmp")),
        (&p1, f(7, "snapshot", "tsnap")),
    ] {
        std::fs::write(d.join(&name), name.as_bytes()).unwrap();
    }
    let out = dir.join("out");
    let (from, to) = (data.to_str().unwrap(), out.to_str().unwrap());
    let (code, stdout, err) = tandem(&["snapshot-export", "--from", from, "--out", to]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        stdout,
        format!(
            "snapshots-0: seq 10 ({}, {}, {})\nsnapshots-1: seq 7 ({}); no idempotency window beside it: repeated places of earlier orders will be answered 409\n",
            f(10, "answers", "bin"),
            f(10, "checkpoints", "bin"),
            f(10, "snapshot", "tsnap"),
            f(7, "snapshot", "tsnap"),
        )
    );
    assert_eq!(names(&out), ["snapshots-0", "snapshots-1"]);
    assert_eq!(
        names(&out.join("snapshots-0")),
        [
            f(10, "answers", "bin"),
            f(10, "checkpoints", "bin"),
            f(10, "snapshot", "tsnap")
        ]
    );
    let copied = std::fs::read_to_string(out.join("snapshots-0").join(f(10, "snapshot", "tsnap")));
    assert_eq!(copied.unwrap(), f(10, "snapshot", "tsnap"));

    // Not over an earlier export; not from a directory without snapshots.
    let (code, _, err) = tandem(&["snapshot-export", "--from", from, "--out", to]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already holds a snapshot"), "{err}");
    let empty = dir.join("empty");
    std::fs::create_dir_all(empty.join("snapshots-0")).unwrap();
    let (code, _, err) = tandem(&[
        "snapshot-export",
        "--from",
        empty.to_str().unwrap(),
        "--out",
        dir.join("out2").to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("holds no snapshot"), "{err}");
    // A bad command line.
    let (code, _, err) = tandem(&["snapshot-export", "--from", from]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("usage: tandem snapshot-export"), "{err}");
    let (code, help, _) = tandem(&["snapshot-export", "--help"]);
    assert_eq!(code, 0);
    assert!(help.starts_with("usage: tandem snapshot-export"));
}
