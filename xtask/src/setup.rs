//! `cargo xtask setup`: prepares a machine to build, test and run shardline. Every step
//! checks first and prints one line saying whether it found the thing or is installing it,
//! so running it again is cheap and `test`, `lab` and `bench` can call it unconditionally.

use std::{
    env, fs, io,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::run::{cargo, output, probe, run, ticking};

/// Debian packages the lab needs: `ip`/`ethtool` for namespaces and veth offloads, `nsenter`
/// (util-linux) because `ip netns exec` hides bpffs.
const LAB_PACKAGES: &[&str] = &["iproute2", "ethtool", "util-linux"];

/// Debian packages only the tests and the benchmarks call out to: nginx with its stream module
/// as a TCP/UDP backend (and the benchmarks' comparison point), the DejaVu fonts the benchmark
/// chart is labelled with, bpftool (`prog dump jited` / `prog profile`: where the XDP
/// program's time goes), and clang with LLVM's `llc`, which build Katran's balancer for the
/// per-packet comparison (`bench/build.rs`).
const TEST_PACKAGES: &[&str] = &[
    "nginx",
    "libnginx-mod-stream",
    "fonts-dejavu-core",
    "bpftool",
    "clang-14",
    "llvm-14",
];

/// What the machine is being prepared for: the lab needs less than the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// `cargo xtask lab` and `daemon`: the toolchain pieces, the lab's packages and bpffs.
    Lab,
    /// `cargo xtask test`, `bench` and `setup`: everything, cargo-fuzz included.
    Everything,
}

/// The bpf-linker release known to build against the nightly LLVM on these machines.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// The cargo-fuzz release the fuzz runs are tested with.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Where the bpf filesystem must be mounted for maps to be pinned.
const BPFFS: &str = "/sys/fs/bpf";

/// Runs every setup step `purpose` needs in order, stopping at the first failure.
pub fn setup(purpose: Purpose) -> Result<()> {
    timed("rust-src (nightly)", rust_src).context("setup step rust-src failed")?;
    let mut packages = LAB_PACKAGES.to_vec();
    if purpose == Purpose::Everything {
        packages.extend_from_slice(TEST_PACKAGES);
    }
    timed("debian packages", || debian_packages(&packages))
        .context("setup step debian packages failed")?;
    timed("bpf-linker", bpf_linker).context("setup step bpf-linker failed")?;
    if purpose == Purpose::Everything {
        timed("cargo-fuzz", cargo_fuzz).context("setup step cargo-fuzz failed")?;
    }
    bpffs().context("setup step bpffs failed")?;
    Ok(())
}

/// Runs one step, printing the elapsed time every 15 s while it runs (installs, builds) and how
/// long it took when that was long enough to notice.
fn timed(step: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = std::time::Instant::now();
    let result = ticking(
        &format!("setup: {step}"),
        "",
        std::time::Duration::from_secs(15),
        f,
    );
    let secs = started.elapsed().as_secs();
    if secs >= 2 {
        println!("setup: {step} ... done in {secs} s");
    }
    result
}

/// Whether xtask runs with effective uid 0, read from /proc to avoid a libc dependency.
pub fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no effective uid in /proc/self/status")?;
    Ok(euid == "0")
}

fn progress(step: &str, state: &str) {
    println!("setup: {step} ... {state}");
}

/// Fails with a message naming `what` when we are about to change the system without root.
fn require_root(what: &str) -> Result<()> {
    if !is_root()? {
        bail!("{what} needs root; rerun as root (for example `sudo -E cargo xtask setup`) or do it by hand");
    }
    Ok(())
}

/// The eBPF crate is built with nightly's `-Z build-std`, which needs core's source.
fn rust_src() -> Result<()> {
    const STEP: &str = "rust-src (nightly)";
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("listing nightly's components; is a nightly toolchain installed (`rustup toolchain install nightly`)?")?;
    if installed
        .lines()
        .any(|c| c == "rust-src" || c.starts_with("rust-src-"))
    {
        progress(STEP, "already installed");
        return Ok(());
    }
    progress(STEP, "installing");
    run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn debian_packages(packages: &[&str]) -> Result<()> {
    const STEP: &str = "debian packages";
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|pkg| !dpkg_installed(pkg))
        .collect();
    if missing.is_empty() {
        progress(STEP, "already installed");
        return Ok(());
    }
    require_root(&format!("installing {}", missing.join(" ")))?;
    progress(STEP, &format!("installing {}", missing.join(" ")));
    // CI has no stdin and no terminal: never let apt or a maintainer script ask a question.
    run(Command::new("apt-get").arg("update").stdin(Stdio::null()))?;
    run(Command::new("apt-get")
        .args(["install", "-y"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null()))
}

/// True only for a package in dpkg's "installed" state; removed-but-configured packages and
/// unknown names count as missing.
fn dpkg_installed(pkg: &str) -> bool {
    probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_some_and(|status| status.split_whitespace().last() == Some("installed"))
}

/// bpf-linker links the eBPF object. The crates.io build wants a newer LLVM than Debian
/// ships, so it is linked against the libLLVM inside the nightly toolchain (SETUP.md).
fn bpf_linker() -> Result<()> {
    const STEP: &str = "bpf-linker";
    // Running it, not just finding it: a nightly update removes the libLLVM it was linked to.
    if bpf_linker_runs() {
        progress(STEP, "already installed");
        return Ok(());
    }
    let prefix = home()?.join(".cache/shardline/llvm");
    let major = link_nightly_llvm(&prefix)?;
    progress(
        STEP,
        &format!("installing {BPF_LINKER_VERSION} against nightly's LLVM {major} (about a minute)"),
    );
    run(cargo()
        .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        // A present-but-broken binary would otherwise make `cargo install` a no-op.
        .arg("--force")
        .env("LLVM_PREFIX", &prefix))?;
    if !bpf_linker_runs() {
        bail!(
            "bpf-linker was installed but `bpf-linker --version` still fails; \
             make sure {} is on PATH",
            cargo_bin_dir()?.display()
        );
    }
    Ok(())
}

/// cargo-fuzz, which the bounded fuzz runs of `cargo xtask test` use (with nightly).
fn cargo_fuzz() -> Result<()> {
    const STEP: &str = "cargo-fuzz";
    if probe(cargo().args(["fuzz", "--version"])).is_some() {
        progress(STEP, "already installed");
        return Ok(());
    }
    progress(
        STEP,
        &format!("installing {CARGO_FUZZ_VERSION} (about two minutes)"),
    );
    run(cargo().args([
        "install",
        "--locked",
        &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}"),
    ]))
}

fn bpf_linker_runs() -> bool {
    probe(Command::new("bpf-linker").arg("--version")).is_some()
}

/// Points `prefix/lib` at nightly's libLLVM (under both the plain and the soname name, as
/// bpf-linker's build needs both) and returns the LLVM major version.
fn link_nightly_llvm(prefix: &Path) -> Result<u32> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("finding nightly's sysroot")?;
    let sysroot_lib = Path::new(sysroot.trim()).join("lib");
    let mut libs: Vec<PathBuf> = fs::read_dir(&sysroot_lib)
        .with_context(|| format!("reading {}", sysroot_lib.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .collect();
    libs.sort();
    let Some(lib) = libs.into_iter().next() else {
        bail!(
            "no libLLVM.so.*-rust-* in {}; this nightly does not ship a shared LLVM",
            sysroot_lib.display()
        );
    };
    let name = lib
        .file_name()
        .and_then(|n| n.to_str())
        .expect("filtered on a UTF-8 file name");
    let major: u32 = name["libLLVM.so.".len()..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|digits| digits.parse().ok())
        .with_context(|| format!("no LLVM major version in {name}"))?;

    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(name)] {
        force_symlink(&lib, &link)?;
    }
    Ok(major)
}

/// `ln -sf`: replaces whatever `link` was, so a nightly update re-points it.
fn force_symlink(target: &Path, link: &Path) -> Result<()> {
    match fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", link.display())),
    }
    symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

/// A fresh machine does not mount bpffs, and pinning maps fails without it.
fn bpffs() -> Result<()> {
    let step = format!("bpffs at {BPFFS}");
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mounted = mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    });
    if mounted {
        progress(&step, "already mounted");
        return Ok(());
    }
    require_root(&format!("mounting bpffs at {BPFFS}"))?;
    progress(&step, "mounting");
    run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))
}

fn home() -> Result<PathBuf> {
    env::var_os("HOME")
        .map(PathBuf::from)
        .context("HOME is not set")
}

/// Where `cargo install` puts binaries: `$CARGO_HOME/bin`, else `~/.cargo/bin`.
fn cargo_bin_dir() -> Result<PathBuf> {
    match env::var_os("CARGO_HOME") {
        Some(dir) => Ok(PathBuf::from(dir).join("bin")),
        None => Ok(home()?.join(".cargo/bin")),
    }
}
