//! The build-and-run commands: `test`, `lab`, `bench` and `daemon`. Each one prepares what it
//! needs (setup, a release build) and then hands over to cargo or the shardline binary.

use std::{fs, process::Command};

use anyhow::{bail, Context, Result};

use crate::{
    report,
    run::{cargo, exec, run, target_dir, ticking, workspace_root},
    setup::{is_root, setup, Purpose},
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
    step("setup", || setup(Purpose::Everything))?;
    step("cycles", || crate::cycles::check(false))?;
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
    // The end-to-end tests start these binaries (the daemon, the lab's processes), found next
    // to the test executable in the same release target directory.
    step("build", || {
        build(&["shardline-cli", "shardline-lab", "shardline-bench"])
    })?;
    // The package test installs this package with `dpkg -x`; packing the binary just built
    // takes seconds.
    step("package", || crate::package::package(true).map(drop))?;
    // Release: the tests push real packets through the dataplane, too slow in a debug build.
    // Doc tests run first and on their own: in one `cargo test` they come last, and CI reads
    // the harness's last `test result:` line, which would then be a crate's empty doc-test run.
    let mut counts = (0, 0);
    step("doc tests", || {
        counts = run_counting_tests(
            cargo()
                .args(["test", "--workspace", "--release", "--doc"])
                .args(cargo_test_args),
        )?;
        Ok(())
    })?;
    step("test", || {
        let (passed, failed) = run_counting_tests(
            cargo()
                .args([
                    "test",
                    "--workspace",
                    "--release",
                    "--lib",
                    "--bins",
                    "--tests",
                ])
                .args(cargo_test_args)
                .env("RUST_BACKTRACE", "1"),
        )?;
        counts = (counts.0 + passed, counts.1 + failed);
        Ok(())
    })?;
    step("fuzz", || {
        counts.0 += fuzz()?;
        Ok(())
    })?;
    let (passed, failed) = counts;
    // One closing line for the whole run, fuzz runs included.
    println!("xtask: {passed} passed, {failed} failed");
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// The cargo-fuzz targets under `fuzz/`, each run for a bounded time.
const FUZZ_TARGETS: [&str; 6] = ["decide", "partition", "quic", "capture", "config", "bodies"];

/// The whole fuzz step's budget in seconds unless `SHARDLINE_FUZZ_SECONDS` says otherwise;
/// it is split evenly over the targets, so adding one does not lengthen CI.
const FUZZ_BUDGET_SECONDS: u64 = 180;

/// Runs every fuzz target for its share of `SHARDLINE_FUZZ_SECONDS` (default 180 in all) from
/// its checked-in seed corpus; new inputs go to a scratch directory, so the tree stays clean.
/// Returns how many targets ran clean; a crash fails the step (its input is left in
/// `fuzz/artifacts`).
fn fuzz() -> Result<u64> {
    let budget = match std::env::var("SHARDLINE_FUZZ_SECONDS") {
        Ok(text) => text
            .parse::<u64>()
            .with_context(|| format!("SHARDLINE_FUZZ_SECONDS={text:?} is not a whole number"))?,
        Err(_) => FUZZ_BUDGET_SECONDS,
    };
    let seconds = (budget / FUZZ_TARGETS.len() as u64).max(1);
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
    setup(Purpose::Lab)?;
    build(&["shardline-cli", "shardline-lab"])?;
    let mut cmd = Command::new(target_dir().join("release/shardline-lab"));
    cmd.current_dir(workspace_root()).arg("run");
    if let Some(secs) = duration {
        cmd.arg("--duration").arg(secs.to_string());
    }
    if let Some(n) = sessions {
        cmd.arg("--sessions").arg(n.to_string());
    }
    Err(exec(cmd.args(extra)))
}

/// Criterion benchmarks, then the kernel-side benchmarks (`shardline-bench`), then
/// the JSON merge and the Markdown summary next to it.
pub fn bench(quick: bool, report_only: bool) -> Result<()> {
    let out = workspace_root().join(DATAPLANE_RESULTS);
    if report_only {
        return report::finish(&out, &target_dir().join("criterion"), quick);
    }
    setup(Purpose::Everything)?;
    build(&["shardline-cli", "shardline-lab", "shardline-bench"])?;
    let mut criterion = cargo();
    criterion.args(["bench", "-p", "shardline-bench"]);
    if quick {
        // The bench crate reads this to shrink criterion's warm-up and sample counts.
        criterion.env("SHARDLINE_BENCH_QUICK", "1");
    }
    run(&mut criterion)?;

    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut dataplane = Command::new(target_dir().join("release/shardline-bench"));
    dataplane
        .current_dir(workspace_root())
        .args(["--out", DATAPLANE_RESULTS]);
    if quick {
        dataplane.arg("--quick");
    }
    run(&mut dataplane)?;
    // `shardline-bench` wrote the replay suite (issue 20's goal per trace, the speed) too.
    report::finish(&out, &target_dir().join("criterion"), quick)
}

/// Runs the daemon in the foreground with the user's arguments.
pub fn daemon(args: &[String]) -> Result<()> {
    setup(Purpose::Lab)?;
    build(&["shardline-cli"])?;
    let mut cmd = Command::new(target_dir().join("release/shardline"));
    cmd.current_dir(workspace_root()).arg("daemon").args(args);
    Err(exec(&mut cmd))
}

/// Builds `packages`' binaries in release mode (the library's build script builds the eBPF
/// object). A first build on a fresh 2-core machine takes several minutes, so a line with the
/// elapsed time is printed every 30 s while it runs.
pub(crate) fn build(packages: &[&str]) -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--bins"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    ticking(
        "release build",
        "a first build takes about 8 minutes on 2 cores",
        std::time::Duration::from_secs(30),
        || run(&mut cmd).with_context(|| format!("building {}", packages.join(", "))),
    )
}

/// Runs one named step of `test`, so a failure says which step it was.
fn step(name: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    f().with_context(|| format!("step `{name}` failed"))
}
