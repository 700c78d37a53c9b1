//! The build-and-run commands: `test`, `lab`, `bench` and `daemon`. Each one prepares what it
//! needs (setup, a release build) and then hands over to cargo or the shardline binary.

use std::{fs, path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    report,
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
    let mut counts = (0, 0);
    step("test", || {
        counts = run_counting_tests(
            cargo()
                .args(["test", "--workspace", "--release"])
                .args(cargo_test_args)
                .env("RUST_BACKTRACE", "1"),
        )?;
        Ok(())
    })?;
    step("fuzz", || {
        counts.0 += fuzz()?;
        Ok(())
    })?;
    let (passed, failed) = counts;
    // One closing line for the whole run: cargo's own last line belongs to whichever test
    // binary ran last (often doc tests with nothing in them).
    println!("xtask: {passed} passed, {failed} failed");
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The cargo-fuzz targets under `fuzz/`, each run for a bounded time.
const FUZZ_TARGETS: [&str; 2] = ["decide", "partition"];

/// Runs every fuzz target for `SHARDLINE_FUZZ_SECONDS` (default 60) from its checked-in seed
/// corpus; new inputs go to a scratch directory, so the tree stays clean. Returns how many
/// targets ran clean; a crash fails the step (its input is left in `fuzz/artifacts`).
fn fuzz() -> Result<u64> {
    let seconds = std::env::var("SHARDLINE_FUZZ_SECONDS").unwrap_or_else(|_| "60".into());
    let root = workspace_root();
    for target in FUZZ_TARGETS {
        let scratch = std::env::temp_dir().join(format!("shardline-fuzz-{target}"));
        let _ = fs::remove_dir_all(&scratch);
        fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        let seeds = root.join("fuzz/corpus").join(target);
        // libFuzzer needs nightly's sanitizer flags; `rustup run` picks nightly even though
        // xtask itself runs under the stable cargo.
        run(Command::new("rustup")
            .current_dir(&root)
            .args(["run", "nightly", "cargo", "fuzz", "run", target])
            .arg(&scratch)
            .arg(&seeds)
            .args(["--", &format!("-max_total_time={seconds}")]))
        .with_context(|| format!("fuzz target {target} failed"))?;
        let _ = fs::remove_dir_all(&scratch);
    }
    Ok(FUZZ_TARGETS.len() as u64)
}

/// Runs a `cargo test` command, echoing its output, and sums the harness's `test result:`
/// lines. Fails if cargo fails.
fn run_counting_tests(cmd: &mut Command) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    println!("xtask: running {cmd:?}");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let (mut passed, mut failed) = (0, 0);
    for line in BufReader::new(child.stdout.take().context("cargo test stdout")?).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                    continue;
                };
                let n: u64 = n.parse().unwrap_or(0);
                match kind {
                    "passed" => passed += n,
                    "failed" => failed += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!("cargo test failed ({status}); {passed} passed, {failed} failed");
    }
    Ok((passed, failed))
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

/// Criterion benchmarks, then the kernel-side benchmarks (`shardline bench-dataplane`), then
/// the JSON merge and the Markdown summary next to it.
pub fn bench(quick: bool, report_only: bool) -> Result<()> {
    let out = workspace_root().join(DATAPLANE_RESULTS);
    if report_only {
        return report::finish(&out, &target_dir().join("criterion"), quick);
    }
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
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut dataplane = Command::new(&shardline);
    dataplane
        .current_dir(workspace_root())
        .args(["bench-dataplane", "--out", DATAPLANE_RESULTS]);
    if quick {
        dataplane.arg("--quick");
    }
    run(&mut dataplane)?;
    report::finish(&out, &target_dir().join("criterion"), quick)
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
