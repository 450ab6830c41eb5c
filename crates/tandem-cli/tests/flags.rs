//! The `tandem` binary's command line: `--help`/`-h` on the binary and on
//! every command prints usage and exits 0, `--version`/`-V` prints the
//! version, and a command line that cannot be used (unknown command or
//! flag, missing value) prints the command's usage to standard error and
//! exits 2, while a job that fails exits 1.

mod common;

use common::tandem;

const COMMANDS: [&str; 4] = ["match", "node", "edge", "loadgen"];

#[test]
fn help_on_the_binary_prints_usage_and_exits_zero() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let (code, out, err) = tandem(args);
        assert_eq!(code, 0, "tandem {args:?}: {err}");
        assert!(
            out.starts_with("usage: tandem <command>"),
            "{args:?}: {out}"
        );
        for cmd in COMMANDS {
            assert!(out.contains(&format!("\n  {cmd} ")), "{cmd} listed: {out}");
        }
        assert_eq!(err, "", "{args:?}");
    }
}

#[test]
fn version_prints_the_version_and_exits_zero() {
    for flag in ["--version", "-V"] {
        let (code, out, err) = tandem(&[flag]);
        assert_eq!(code, 0, "{flag}: {err}");
        assert_eq!(
            out,
            format!("tandem {}\n", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
        assert_eq!(err, "", "{flag}");
    }
}

#[test]
fn help_on_every_command_prints_its_usage_and_exits_zero() {
    for cmd in COMMANDS {
        let usage = format!("usage: tandem {cmd} ");
        for flag in ["--help", "-h"] {
            let (code, out, err) = tandem(&[cmd, flag]);
            assert_eq!(code, 0, "tandem {cmd} {flag}: {err}");
            assert!(out.starts_with(&usage), "tandem {cmd} {flag}: {out}");
            assert!(
                out.contains("--help"),
                "tandem {cmd} {flag} lists --help: {out}"
            );
            assert_eq!(err, "", "tandem {cmd} {flag}");
        }
        // `--help` after other flags, and `tandem help <command>`.
        let (code, out, _) = tandem(&[cmd, "--seed-or-config", "x", "--help"]);
        assert_eq!(code, 2, "an unknown flag before --help is still refused");
        assert_eq!(out, "");
        let (code, out, err) = tandem(&["help", cmd]);
        assert_eq!(code, 0, "tandem help {cmd}: {err}");
        assert!(out.starts_with(&usage), "tandem help {cmd}: {out}");
    }
    let (code, out, err) = tandem(&["match", "--chain", "--help"]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert!(out.starts_with("usage: tandem match "), "{out}");
    let (code, out, err) = tandem(&["node", "--config", "/nonexistent.toml", "-h"]);
    assert_eq!(code, 0, "help wins over a config not read: {err}");
    assert!(out.starts_with("usage: tandem node "), "{out}");
}

#[test]
fn a_command_line_that_cannot_be_used_prints_usage_to_stderr_and_exits_two() {
    for cmd in COMMANDS {
        for args in [
            vec![cmd, "--bogus"],
            vec![cmd, "-x"],
            vec![cmd, "--bogus=1"],
            vec![cmd, "stray"],
        ] {
            let (code, out, err) = tandem(&args);
            assert_eq!(code, 2, "tandem {args:?}: {err}");
            assert_eq!(out, "", "tandem {args:?}: nothing on stdout");
            let flag = args[1].split('=').next().unwrap();
            assert!(err.contains(&format!("{flag:?}")), "names {flag}: {err}");
            assert!(
                err.contains(&format!("usage: tandem {cmd} ")),
                "tandem {args:?} prints its usage: {err}"
            );
        }
    }
    // A flag without its value.
    for args in [
        &["match", "--input"][..],
        &["node", "--config"],
        &["edge", "--config"],
        &["loadgen", "--rate"],
    ] {
        let (code, _, err) = tandem(args);
        assert_eq!(code, 2, "tandem {args:?}: {err}");
        assert!(err.contains(args[1]), "names {}: {err}", args[1]);
        assert!(
            err.contains(&format!("usage: tandem {} ", args[0])),
            "{err}"
        );
    }
    // A value out of its limits.
    let (code, _, err) = tandem(&["loadgen", "--rate", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("usage: tandem loadgen "), "{err}");
    // No command, an unknown command, an unknown flag of the binary.
    for args in [&[][..], &["bogus"], &["--bogus"], &["help", "bogus"]] {
        let (code, out, err) = tandem(args);
        assert_eq!(code, 2, "tandem {args:?}: {err}");
        assert_eq!(out, "");
        assert!(err.contains("usage: tandem <command>"), "{args:?}: {err}");
    }
}

#[test]
fn a_job_that_fails_exits_one_without_usage() {
    let (code, _, err) = tandem(&["match", "--input", "/nonexistent/file"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/file"), "{err}");
    assert!(!err.contains("usage:"), "{err}");
    let (code, _, err) = tandem(&["node", "--config", "/nonexistent/node.toml"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("/nonexistent/node.toml"), "{err}");
    assert!(!err.contains("usage:"), "{err}");
}
