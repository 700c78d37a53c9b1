//! The build-and-run commands: `test`, `lab`, `bench` and `daemon`. Each one prepares what it
//! needs (setup, a release build) and then hands over to cargo or the shardline binary.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    run::{cargo, exec, probe, run, target_dir, workspace_root},
    setup::{is_root, setup},
};

/// Where `bench` asks the dataplane benchmark to write, relative to the workspace root.
const DATAPLANE_RESULTS: &str = "bench/results/latest.json";

/// The CI gate: setup, then format check, clippy and the full release test suite.
/// `cargo_test_args` go to `cargo test` verbatim (test filters, `-p`, or `-- --nocapture`).
pub fn test(cargo_test_args: &[String]) -> Result<()> {
    // Checked first so a non-root run fails in a second instead of after clippy.
    if !is_root()? {
        bail!(
            "cargo xtask test needs root: the tests load BPF programs and create network \
             namespaces. Rerun as root (for example `sudo -E env PATH=\"$PATH\" cargo xtask test`)."
        );
    }
    step("setup", setup)?;
    step("fmt", || {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("clippy", || {
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    // Release: the tests push real packets through the dataplane, too slow in a debug build.
    step("test", || {
        run(cargo()
            .args(["test", "--workspace", "--release"])
            .args(cargo_test_args)
            .env("RUST_BACKTRACE", "1"))
    })
}

/// Runs the lab. Only the flags the user gave are forwarded, so shardline owns the defaults.
pub fn lab(duration: Option<u64>, sessions: Option<u64>, extra: &[String]) -> Result<()> {
    setup()?;
    let mut cmd = Command::new(build_shardline()?);
    cmd.current_dir(workspace_root()).arg("lab");
    if let Some(secs) = duration {
        cmd.arg("--duration").arg(secs.to_string());
    }
    if let Some(n) = sessions {
        cmd.arg("--sessions").arg(n.to_string());
    }
    Err(exec(cmd.args(extra)))
}

/// Criterion benchmarks, then the BPF dataplane benchmark when the binary has it.
pub fn bench(quick: bool) -> Result<()> {
    setup()?;
    let shardline = build_shardline()?;
    let mut criterion = cargo();
    criterion.args(["bench", "-p", "shardline-bench"]);
    if quick {
        // The bench crate reads this to shrink criterion's warm-up and sample counts.
        criterion.env("SHARDLINE_BENCH_QUICK", "1");
    }
    run(&mut criterion)?;

    let has_dataplane_bench = probe(Command::new(&shardline).arg("help"))
        .is_some_and(|help| help.contains("bench-dataplane"));
    if !has_dataplane_bench {
        println!(
            "xtask: dataplane benchmark skipped: `shardline bench-dataplane` is not built yet"
        );
        return Ok(());
    }
    let out = workspace_root().join(DATAPLANE_RESULTS);
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    run(Command::new(&shardline)
        .current_dir(workspace_root())
        .args(["bench-dataplane", "--out", DATAPLANE_RESULTS]))
}

/// Runs the daemon in the foreground with the user's arguments.
pub fn daemon(args: &[String]) -> Result<()> {
    let mut cmd = Command::new(build_shardline()?);
    cmd.current_dir(workspace_root()).arg("daemon").args(args);
    Err(exec(&mut cmd))
}

/// Builds the shardline binary in release mode (which builds the eBPF object through its
/// build script) and returns its path.
fn build_shardline() -> Result<PathBuf> {
    run(cargo().args(["build", "--release", "-p", "shardline"])).context("building shardline")?;
    Ok(target_dir().join("release/shardline"))
}

/// Runs one named step of `test`, so a failure says which step it was.
fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    f().with_context(|| format!("step `{name}` failed"))
}
