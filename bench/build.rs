//! Compiles Katran's balancer (`katran/`, vendored, GPL-2.0) inside the bench's restoring
//! wrapper into a BPF object of its own, for the per-packet cases measured beside shardline's
//! (`src/suite/katran.rs`). It is built as Katran's own `Makefile-bpf` builds it: clang to LLVM
//! IR for the host, then `llc -march=bpf`.
//!
//! The object's path reaches the code as `SHARDLINE_KATRAN_OBJECT`. Without clang and llc (the
//! `clang-14` and `llvm-14` packages, which `cargo xtask setup` installs) the build goes on
//! without it and `SHARDLINE_KATRAN_MISSING` says why: only the Katran cases then fail, with
//! that reason. A vendored source that does not compile fails the build.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The first of `candidates` that runs with `--version`.
fn find(candidates: &[&str]) -> Option<String> {
    candidates
        .iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|c| (*c).to_owned())
}

fn main() {
    let dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("katran");
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-env-changed=SHARDLINE_CLANG");
    println!("cargo:rerun-if-env-changed=SHARDLINE_LLC");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("katran_bench.o");
    let clang = env::var("SHARDLINE_CLANG")
        .ok()
        .or_else(|| find(&["clang-14", "clang"]));
    let llc = env::var("SHARDLINE_LLC")
        .ok()
        .or_else(|| find(&["llc-14", "/usr/lib/llvm-14/bin/llc", "llc"]));
    let (Some(clang), Some(llc)) = (clang, llc) else {
        let why = "clang and llc were not found when shardline-bench was built (install the \
                   clang-14 and llvm-14 packages, e.g. with `cargo xtask setup`, and rebuild)";
        println!("cargo:warning=Katran's comparison object is not built: {why}");
        // A path that does not exist reruns this script on every build, so the object is
        // built as soon as the tools are installed.
        println!("cargo:rerun-if-changed=/usr/bin/clang-14");
        println!("cargo:rustc-env=SHARDLINE_KATRAN_OBJECT=");
        println!("cargo:rustc-env=SHARDLINE_KATRAN_MISSING={why}");
        return;
    };
    compile(&dir, &clang, &llc, &out);
    println!("cargo:rustc-env=SHARDLINE_KATRAN_OBJECT={}", out.display());
    println!("cargo:rustc-env=SHARDLINE_KATRAN_MISSING=");
}

/// `clang … -O2 -emit-llvm -c katran_bench.c -o - | llc -march=bpf -filetype=obj -o out`, with
/// the flags of Katran's `Makefile-bpf`.
fn compile(dir: &Path, clang: &str, llc: &str, out: &Path) {
    let mut ir = Command::new(clang)
        .current_dir(dir)
        .args([
            "-I.",
            "-D__KERNEL__",
            "-Wno-unused-value",
            "-Wno-pointer-sign",
            "-Wno-compare-distinct-pointer-types",
            "-O2",
            "-emit-llvm",
            "-c",
            "-g",
            "katran_bench.c",
            "-o",
            "-",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {clang}: {e}"));
    let ir_out = ir.stdout.take().expect("piped");
    let status = Command::new(llc)
        .args(["-march=bpf", "-filetype=obj", "-o"])
        .arg(out)
        .stdin(ir_out)
        .status()
        .unwrap_or_else(|e| panic!("running {llc}: {e}"));
    let clang_status = ir
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {clang}: {e}"));
    assert!(
        clang_status.success() && status.success(),
        "compiling bench/katran/katran_bench.c failed ({clang}: {clang_status}, {llc}: {status})"
    );
}
