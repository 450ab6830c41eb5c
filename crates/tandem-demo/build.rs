//! Builds `src/skewfix.c` into a shared library that the demo preloads
//! with libfaketime for its node with a skewed clock (see that file for
//! why). The C compiler is the one the Kafka client's build already needs
//! (`CC`, else `cc`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "src/skewfix.c";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-env-changed=CC");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"))
        .join("libtandem_skewfix.so");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(src)
        .arg("-ldl")
        .status()
        .unwrap_or_else(|e| panic!("run the C compiler {cc:?} for {src}: {e}"));
    assert!(status.success(), "{cc:?} failed on {src}: {status}");
}
