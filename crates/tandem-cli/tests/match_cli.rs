//! End-to-end checks of the `tandem match` binary: exit status, streams,
//! files, hostile input, and byte-identical replays.

use std::io::Write;
use std::process::{Command, Stdio};

fn tandem() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tandem"))
}

/// Runs `tandem match` with `input` on stdin; returns (status, stdout, stderr).
fn run_stdin(input: &[u8], extra: &[&str]) -> (i32, Vec<u8>, String) {
    let mut child = tandem()
        .arg("match")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tandem");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A deterministic mixed flow over a few markets and accounts.
fn flow(n: usize) -> Vec<u8> {
    let mut x: u64 = 42;
    let mut rnd = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let mut s = String::new();
    for i in 0..n {
        let market = ["BTC-USD", "ETH-USD", "SOL-USD"][rnd(3) as usize];
        let account = format!("acct{}", rnd(7));
        let side = if rnd(2) == 0 { "buy" } else { "sell" };
        let price = format!("{}.{}", 100 + rnd(5), rnd(100));
        let qty = format!("{}", 1 + rnd(9));
        let id = format!("o{}", rnd(n as u64));
        let line = match rnd(10) {
            0..=5 => format!(
                r#"{{"op":"place","market":"{market}","id":"{id}","account":"{account}","side":"{side}","price":"{price}","qty":"{qty}","tif":"{}"}}"#,
                ["gtc", "gtc", "ioc", "fok"][rnd(4) as usize]
            ),
            6 => format!(
                r#"{{"op":"place","market":"{market}","id":"m{i}","account":"{account}","side":"{side}","type":"market","qty":"{qty}"}}"#
            ),
            7 | 8 => format!(
                r#"{{"op":"cancel","market":"{market}","id":"{id}","account":"{account}"}}"#
            ),
            _ => format!(
                r#"{{"op":"amend","market":"{market}","id":"{id}","account":"{account}","price":"{price}"}}"#
            ),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s.into_bytes()
}

#[test]
fn replay_is_byte_identical_across_runs_and_input_paths() {
    let input = flow(20_000);
    let (c1, out1, err1) = run_stdin(&input, &["--chain"]);
    let (c2, out2, err2) = run_stdin(&input, &["--chain"]);
    assert_eq!((c1, c2), (0, 0));
    assert_eq!(out1, out2);
    assert_eq!(err1, err2, "same final seq and chain");
    assert!(err1.starts_with("seq=20000 chain="), "{err1}");

    let dir = std::env::temp_dir().join(format!("tandem-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let (inp, outp) = (dir.join("in.jsonl"), dir.join("out.jsonl"));
    std::fs::write(&inp, &input).expect("write input");
    let st = tandem()
        .args(["match", "--input"])
        .arg(&inp)
        .arg("--output")
        .arg(&outp)
        .status()
        .expect("run");
    assert!(st.success());
    assert_eq!(std::fs::read(&outp).expect("read output"), out1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn hostile_input_exits_zero_with_one_rejection_per_line() {
    let mut input = Vec::new();
    input.extend_from_slice(b"\xff\xfe not utf-8\n");
    input.extend_from_slice(&vec![b'['; 100_000]);
    input.push(b'\n');
    input.extend_from_slice(
        format!("{{\"op\":\"place\",\"id\":\"{}\"}}\n", "x".repeat(1 << 20)).as_bytes(),
    );
    input.extend_from_slice(b"{\"op\":\"place\",\"market\":\"M\",\"id\":\"a\",\"account\":\"b\",\"side\":\"buy\",\"price\":\"1\",\"qty\":\"1\"}");
    let (code, out, err) = run_stdin(&input, &[]);
    assert_eq!(code, 0, "{err}");
    let out = String::from_utf8(out).expect("utf-8 output");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert!(lines[0].starts_with(r#"{"seq":1,"event":"rejected""#));
    assert!(lines[1].starts_with(r#"{"seq":2,"event":"rejected""#));
    assert!(lines[2].starts_with(r#"{"seq":3,"event":"rejected","id":"xxxx"#));
    assert_eq!(
        lines[3],
        r#"{"seq":4,"event":"accepted","market":"M","id":"a"}"#
    );
    assert!(lines[4].starts_with(r#"{"event":"book","market":"M""#));
}

#[test]
fn empty_input_prints_nothing_and_bad_flags_fail() {
    let (code, out, _) = run_stdin(b"", &[]);
    assert_eq!((code, out.len()), (0, 0));
    let st = tandem().args(["match", "--bogus"]).output().expect("run");
    assert_eq!(st.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&st.stderr).contains("--bogus"));
    let st = tandem()
        .args(["match", "--input", "/nonexistent/file"])
        .output()
        .expect("run");
    assert_eq!(
        st.status.code(),
        Some(1),
        "a job that fails (not a usage error)"
    );
    assert!(String::from_utf8_lossy(&st.stderr).contains("/nonexistent/file"));
}
