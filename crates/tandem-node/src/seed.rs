//! A new node's first snapshot, from another node of the same log
//! (`[snapshot] seed_from`): a cold cluster's node restores it and replays
//! only the log after it, instead of the whole log from seq 1.
//!
//! `seed_from` is a directory laid out as a node's `data_dir` (a copy of
//! one, from object storage or a volume snapshot): for each partition P,
//! `snapshots-P/`. When the node's own `snapshots-P/` holds no snapshot,
//! the newest snapshot there is copied in with the files saved beside it at
//! the same seq: the idempotency window (`answers-S.bin`, without which a
//! repeated place would be answered 409) and the chain checkpoints
//! (`checkpoints-S.bin`). The newest snapshot whose window is there is
//! preferred (the window is written just after the snapshot). Each file is
//! copied under a temporary name, synced and renamed, the snapshot last,
//! and the directory synced: a crash mid-copy leaves no snapshot, so the
//! next start seeds again. A node that has a snapshot of its own is never
//! seeded (its state is newer than any seed it was configured with).
//!
//! The snapshot's bytes are checked where every snapshot is, when the
//! replica restores it (checksum, structure); one it refuses is skipped and
//! the log replayed from seq 1.
//!
//! Whose log: every node writes its log's identity (`Log::identity`: the
//! file log's id, or the Kafka cluster id and topic) into each of its
//! snapshot directories ([`LOG_FILE`]), and refuses to start when one
//! names another log (a data directory moved to another exchange would
//! restore that exchange's books and diverge). A seed naming another log
//! is refused the same way, before anything is copied; a seed without the
//! file (written before it existed) is taken unchecked, as is any check
//! against a Kafka identity without a cluster id (`kafka:?BROKERS/TOPIC`,
//! which changes with how the brokers are spelt). Then a snapshot of
//! another exchange restores and diverges, which the chain checkpoints
//! (`GET /v1/chain`) compared with the other nodes show.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::window::seq_of;

/// The file in a partition's snapshot directory that names the log its
/// state comes from (`Log::identity`, one line).
pub const LOG_FILE: &str = "log-identity";

/// An identity that says which log it is (not a Kafka one without a
/// cluster id).
fn reliable(identity: &str) -> bool {
    !identity.starts_with("kafka:?")
}

/// The identity written in `dir`, if any.
fn written(dir: &Path) -> Result<Option<String>, String> {
    let path = dir.join(LOG_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s.trim_end_matches('\n').to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Refuses a seed directory whose state comes from another log than
/// `identity` (see the module doc).
pub fn check_seed(src: &Path, identity: &str) -> Result<(), String> {
    match written(src)? {
        Some(theirs) if theirs != identity && reliable(&theirs) && reliable(identity) => {
            Err(format!(
                "{} holds the state of log {theirs:?}, and this node's log is {identity:?}: \
             a seed must come from a node of the same log",
                src.display()
            ))
        }
        _ => Ok(()),
    }
}

/// At start, before the replica opens `dir`: refuses a snapshot directory
/// whose state comes from another log than `identity`, and otherwise
/// writes `identity` there (temporary file, sync, rename).
pub fn claim(dir: &Path, identity: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    match written(dir)? {
        Some(theirs) if theirs == identity => return Ok(()),
        Some(theirs) if reliable(&theirs) && reliable(identity) => {
            return Err(format!(
                "{} holds the state of log {theirs:?}, and this node's log is {identity:?}: \
                 a node's snapshots must come from its own log (empty the directory, or seed \
                 it from a node of this log with snapshot.seed_from)",
                dir.display()
            ))
        }
        _ => {}
    }
    let path = dir.join(LOG_FILE);
    let tmp = dir.join(format!("{LOG_FILE}.tmp"));
    std::fs::write(&tmp, format!("{identity}\n"))
        .and_then(|()| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .and_then(|()| File::open(dir)?.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// What was copied into a snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    /// The snapshot's seq.
    pub seq: u64,
    /// The file names copied (the snapshot last).
    pub files: Vec<String>,
    /// The window file was not beside the snapshot: repeated places of
    /// orders placed before it are answered 409.
    pub without_window: bool,
}

/// Snapshot seqs and window seqs in `dir`.
fn scan(dir: &Path) -> io::Result<(Vec<u64>, Vec<u64>)> {
    let (mut snaps, mut windows) = (Vec::new(), Vec::new());
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(s) = seq_of(name, "snapshot-", ".tsnap") {
            snaps.push(s);
        } else if let Some(s) = seq_of(name, "answers-", ".bin") {
            windows.push(s);
        }
    }
    Ok((snaps, windows))
}

/// If `dest` holds no snapshot, copies the newest snapshot of `src` (and
/// its window and checkpoints) into it. `Ok(None)`: `dest` has a snapshot
/// already, or `src` has none.
pub fn seed(src: &Path, dest: &Path) -> Result<Option<Seeded>, String> {
    let at = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
    std::fs::create_dir_all(dest).map_err(|e| at(dest, e))?;
    let (own, _) = scan(dest).map_err(|e| at(dest, e))?;
    if !own.is_empty() {
        return Ok(None);
    }
    // A source that is a live node's directory may prune a snapshot while
    // it is copied: the choice is made again (three tries).
    let mut tries = 0;
    let (seq, names) = loop {
        let (snaps, windows) = match scan(src) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(at(src, e)),
        };
        let with_window = snaps.iter().filter(|s| windows.contains(s)).max();
        let Some(&seq) = with_window.or(snaps.iter().max()) else {
            return Ok(None);
        };
        let mut names = Vec::new();
        for beside in [
            crate::window::path(Path::new(""), seq),
            crate::checkpoints::path(Path::new(""), seq),
        ] {
            let name = beside.to_string_lossy().into_owned();
            if src.join(&name).is_file() {
                names.push(name);
            }
        }
        if src.join(LOG_FILE).is_file() {
            names.insert(0, LOG_FILE.to_owned());
        }
        names.push(tandem_replica::snapshot_name(seq));
        match names
            .iter()
            .try_for_each(|n| copy_synced(&src.join(n), &dest.join(n)))
        {
            Ok(()) => break (seq, names),
            Err((e, gone)) => {
                // Nothing half-seeded stays behind.
                for n in &names {
                    let _ = std::fs::remove_file(dest.join(n));
                }
                tries += 1;
                if !gone || tries == 3 {
                    return Err(e);
                }
            }
        }
    };
    let without_window = !names.iter().any(|n| n.starts_with("answers-"));
    File::open(dest)
        .and_then(|d| d.sync_all())
        .map_err(|e| at(dest, e))?;
    Ok(Some(Seeded {
        seq,
        files: names,
        without_window,
    }))
}

/// Copies `from` to `to` through `to.seed-tmp`, synced before the rename.
/// An error says whether `from` was gone.
fn copy_synced(from: &Path, to: &Path) -> Result<(), (String, bool)> {
    let mut tmp = PathBuf::from(to);
    tmp.as_mut_os_string().push(".seed-tmp");
    let copied = std::fs::copy(from, &tmp)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, to));
    copied.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        let gone = e.kind() == io::ErrorKind::NotFound && !from.exists();
        let why = format!("copying {} to {}: {e}", from.display(), to.display());
        (why, gone)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tandem-seed-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(d: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    fn touch(d: &Path, name: &str, body: &str) {
        std::fs::write(d.join(name), body).unwrap();
    }

    #[test]
    fn the_newest_snapshot_with_its_window_is_copied_once() {
        let (src, dest) = (dir("src"), dir("dest"));
        let s = |n: u64| format!("snapshot-{n:020}.tsnap");
        let a = |n: u64| format!("answers-{n:020}.bin");
        let c = |n: u64| format!("checkpoints-{n:020}.bin");
        for (name, body) in [
            (s(10), "s10"),
            (a(10), "a10"),
            (c(10), "c10"),
            (s(20), "s20"),
            (a(20), "a20"),
            (c(20), "c20"),
            // The newest snapshot's window is not written yet.
            (s(30), "s30"),
            (c(30), "c30"),
            ("notes.txt".into(), "x"),
        ] {
            touch(&src, &name, body);
        }
        let got = seed(&src, &dest).unwrap().expect("seeded");
        assert_eq!(
            got,
            Seeded {
                seq: 20,
                files: vec![a(20), c(20), s(20)],
                without_window: false,
            }
        );
        assert_eq!(names(&dest), vec![a(20), c(20), s(20)]);
        assert_eq!(std::fs::read_to_string(dest.join(s(20))).unwrap(), "s20");
        // A directory with a snapshot of its own is left alone.
        assert_eq!(seed(&src, &dest).unwrap(), None);
        assert_eq!(names(&dest), vec![a(20), c(20), s(20)]);

        // No window anywhere: the newest snapshot, said to be without one.
        let (src, dest) = (dir("src2"), dir("dest2"));
        touch(&src, &s(5), "s5");
        touch(&src, &s(7), "s7");
        touch(&src, &c(7), "c7");
        let got = seed(&src, &dest).unwrap().expect("seeded");
        assert_eq!((got.seq, got.without_window), (7, true));
        assert_eq!(names(&dest), vec![c(7), s(7)]);

        // Nothing to seed from: no directory, or no snapshot in it.
        assert_eq!(seed(&src.join("missing"), &dir("dest3")).unwrap(), None);
        let empty = dir("src4");
        touch(&empty, &a(3), "a3");
        let dest4 = dir("dest4");
        assert_eq!(seed(&empty, &dest4).unwrap(), None);
        assert!(names(&dest4).is_empty());
        for d in ["src", "dest", "src2", "dest2", "dest3", "src4", "dest4"] {
            let _ = std::fs::remove_dir_all(dir(d));
        }
    }

    #[test]
    fn a_directory_and_a_seed_name_their_log_and_another_log_is_refused() {
        let (d, src) = (dir("claim"), dir("claim-src"));
        claim(&d, "file:aaaa").unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join(LOG_FILE)).unwrap(),
            "file:aaaa\n"
        );
        claim(&d, "file:aaaa").unwrap();
        let e = claim(&d, "kafka:c1/orders").unwrap_err();
        assert!(
            e.contains("\"file:aaaa\"") && e.contains("\"kafka:c1/orders\""),
            "{e}"
        );
        // A Kafka identity without a cluster id says too little to refuse
        // on: the file is rewritten.
        let k = dir("claim-kafka");
        claim(&k, "kafka:?b1:9092/orders").unwrap();
        claim(&k, "kafka:?b1:9092,b2:9092/orders").unwrap();
        assert_eq!(
            std::fs::read_to_string(k.join(LOG_FILE)).unwrap(),
            "kafka:?b1:9092,b2:9092/orders\n"
        );

        // A seed without the file is taken unchecked; with it, only for
        // the same log; and the file comes with the seed.
        check_seed(&src, "file:aaaa").unwrap();
        check_seed(&src.join("missing"), "file:aaaa").unwrap();
        touch(&src, LOG_FILE, "file:bbbb\n");
        assert!(check_seed(&src, "file:aaaa")
            .unwrap_err()
            .contains("a seed must come from a node of the same log"));
        check_seed(&src, "file:bbbb").unwrap();
        check_seed(&src, "kafka:?b1:9092/orders").unwrap();
        touch(&src, &format!("snapshot-{:020}.tsnap", 4), "s4");
        let dest = dir("claim-dest");
        let got = seed(&src, &dest).unwrap().expect("seeded");
        assert_eq!(got.files[0], LOG_FILE);
        claim(&dest, "file:bbbb").unwrap();
        assert!(claim(&dest, "file:aaaa").is_err());
        for x in ["claim", "claim-src", "claim-kafka", "claim-dest"] {
            let _ = std::fs::remove_dir_all(dir(x));
        }
    }
}
