//! Child processes. Every command xtask starts goes through here, so each one is echoed the
//! same way before it runs and a failure says which command failed and how.

use std::{
    env,
    ffi::OsStr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

/// The workspace root. Taken from xtask's own manifest path at compile time, so `cargo xtask`
/// behaves the same from any directory inside the repository.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask's manifest directory has a parent")
        .to_path_buf()
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR` so the binaries we exec are the
/// ones the build just produced.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    match env::var_os("CARGO_TARGET_DIR") {
        // `join` keeps an absolute override as is and resolves a relative one against the
        // root, which is where our cargo invocations run.
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// A `cargo` command run from the workspace root. Prefers `$CARGO`, the cargo that launched
/// `cargo xtask`, so nested builds use the same toolchain; falls back to `cargo` on PATH.
pub fn cargo() -> Command {
    let mut cmd = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd` with inherited stdio after printing `xtask: running <cmd>`; fails if it cannot
/// start or exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    println!("xtask: running {line}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`: is it installed and on PATH?"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` silently and returns its stdout if it exits 0, or `None` if it fails or cannot
/// start. Used for probes, where "not found" simply means "not there yet".
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Like [`probe`], but a failure is an error carrying the command's stderr; for queries whose
/// answer we cannot do without.
pub fn output(cmd: &mut Command) -> Result<String> {
    let line = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`: is it installed and on PATH?"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces xtask with `cmd`, so the program owns the terminal, receives Ctrl-C directly and
/// its exit code reaches the caller unchanged. Returns only if the exec itself failed.
pub fn exec(cmd: &mut Command) -> anyhow::Error {
    let line = display(cmd);
    println!("xtask: running {line}");
    let err = cmd.exec();
    anyhow::Error::new(err).context(format!("could not exec `{line}`"))
}

/// Runs `f`, printing `xtask: LABEL ... still running (N s so far[; HINT])` every `every`
/// while it runs, so a long install or a first build never looks hung.
pub fn ticking<T>(label: &str, hint: &str, every: std::time::Duration, f: impl FnOnce() -> T) -> T {
    use std::sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    };
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let done = Arc::clone(&done);
        let (label, hint) = (label.to_owned(), hint.to_owned());
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut next = every;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let elapsed = started.elapsed();
                if elapsed >= next {
                    let hint = if hint.is_empty() {
                        String::new()
                    } else {
                        format!("; {hint}")
                    };
                    println!(
                        "xtask: {label} ... still running ({} s so far{hint})",
                        elapsed.as_secs()
                    );
                    next += every;
                }
            }
        })
    };
    let result = f();
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    result
}

/// Renders `cmd` as a shell-like line, environment overrides first, for progress and errors.
fn display(cmd: &Command) -> String {
    let envs = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))));
    // `$CARGO` is a long toolchain path; "cargo" is what a reader would type.
    let program = if env::var_os("CARGO").as_deref() == Some(cmd.get_program()) {
        OsStr::new("cargo")
    } else {
        cmd.get_program()
    };
    let argv = std::iter::once(program).chain(cmd.get_args()).map(quote);
    envs.chain(argv).collect::<Vec<_>>().join(" ")
}

/// Quotes a word only when a shell would split or expand it, to keep echoed lines readable.
fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@+,%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}
