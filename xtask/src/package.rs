//! `package`: the Debian package of the `shardline` binary, staged as a file tree and built
//! with `dpkg-deb --build`.
//!
//! Why `dpkg-deb` on a staged tree and not cargo-deb: `dpkg-deb` is on every Debian host
//! already (cargo-deb is one more `cargo install`, minutes of compiling on a 2-core machine,
//! and a crates.io download on every fresh machine), the tree it packs is the tree
//! `dpkg -x` unpacks, so what the package holds is plain to read here, and the man pages and
//! completions come from the built binary itself (`shardline generate`), which cargo-deb
//! would need a build script or a pre-step for anyway.
//!
//! Layout of the package:
//! - `/usr/bin/shardline`
//! - `/lib/systemd/system/shardline.service` (from `deploy/systemd/`)
//! - `/usr/share/doc/shardline/shardline.example.toml` and an empty `/etc/shardline/`, where
//!   the unit reads `shardline.toml` from
//! - `/usr/share/man/man1/shardline*.1.gz`
//! - bash, zsh and fish completions in the directories each shell's packages load from.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

use crate::run::{output, run, target_dir, workspace_root};

/// Where each completion script `shardline generate completions` writes goes in the package.
const COMPLETIONS: [(&str, &str); 3] = [
    ("shardline", "usr/share/bash-completion/completions"),
    ("_shardline", "usr/share/zsh/vendor-completions"),
    ("shardline.fish", "usr/share/fish/vendor_completions.d"),
];

/// Builds the release binary (unless `no_build`: reuse the one built) and packs it; prints and
/// returns the `.deb`'s path, `$CARGO_TARGET_DIR/debian/shardline_VERSION_ARCH.deb`.
pub fn package(no_build: bool) -> Result<PathBuf> {
    if !no_build {
        crate::commands::build(&["shardline-cli"])?;
    }
    let binary = target_dir().join("release/shardline");
    if !binary.exists() {
        bail!(
            "{} is missing: build it (`cargo build --release -p shardline-cli`) or drop --no-build",
            binary.display()
        );
    }
    let version = version(&binary)?;
    let arch = output(Command::new("dpkg").arg("--print-architecture"))
        .context("dpkg is needed to build the package (apt-get install dpkg)")?
        .trim()
        .to_owned();
    let out = target_dir().join("debian");
    let stage = out.join(format!("shardline_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("clearing {}", stage.display()))?;
    }
    stage_tree(&binary, &stage)?;
    let installed_kib = du_kib(&stage)?;
    write(
        &stage.join("DEBIAN/control"),
        &control(&version, &arch, installed_kib),
    )?;
    let deb = out.join(format!("shardline_{version}_{arch}.deb"));
    // gzip, not dpkg's default xz: a few seconds instead of half a minute for a ~20 MB binary
    // on a loaded 2-core machine, for a package that is built far more often than downloaded.
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    println!("xtask: package {}", deb.display());
    Ok(deb)
}

/// The version `shardline --version` reports (`shardline 0.1.0` → `0.1.0`).
fn version(binary: &Path) -> Result<String> {
    let line = output(Command::new(binary).arg("--version"))?;
    parse_version(&line).with_context(|| format!("unexpected `shardline --version`: {line:?}"))
}

fn parse_version(line: &str) -> Option<String> {
    let v = line.trim().strip_prefix("shardline ")?;
    (!v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~-".contains(c)))
    .then(|| v.to_owned())
}

/// Fills `stage` with every file of the package but `DEBIAN/control`.
fn stage_tree(binary: &Path, stage: &Path) -> Result<()> {
    let root = workspace_root();
    copy(binary, &stage.join("usr/bin/shardline"))?;
    copy(
        &root.join("deploy/systemd/shardline.service"),
        &stage.join("lib/systemd/system/shardline.service"),
    )?;
    copy(
        &root.join("shardline.example.toml"),
        &stage.join("usr/share/doc/shardline/shardline.example.toml"),
    )?;
    fs::create_dir_all(stage.join("etc/shardline"))?;

    let scratch = stage
        .parent()
        .context("the stage has a parent")?
        .join("generated");
    let _ = fs::remove_dir_all(&scratch);
    let generate = |what: &str, dir: &Path| -> Result<()> {
        run(Command::new(binary).arg("generate").arg(what).arg(dir))
    };
    let man = scratch.join("man");
    generate("man", &man)?;
    let man1 = stage.join("usr/share/man/man1");
    fs::create_dir_all(&man1)?;
    let mut pages = Vec::new();
    for entry in fs::read_dir(&man)? {
        let page = entry?.path();
        let dest = man1.join(page.file_name().context("man page name")?);
        fs::copy(&page, &dest)?;
        pages.push(dest);
    }
    // -n: no name or time stamp in the header, so the same page compresses the same.
    run(Command::new("gzip").args(["-9nf"]).args(&pages))?;
    let completions = scratch.join("completions");
    generate("completions", &completions)?;
    for (file, dir) in COMPLETIONS {
        copy(&completions.join(file), &stage.join(dir).join(file))?;
    }
    fs::remove_dir_all(&scratch).with_context(|| format!("removing {}", scratch.display()))?;
    Ok(())
}

/// The `DEBIAN/control` file.
fn control(version: &str, arch: &str, installed_kib: u64) -> String {
    format!(
        "Package: shardline\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: shardline developers <shardline@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: libc6\n\
         Recommends: systemd\n\
         Section: net\n\
         Priority: optional\n\
         Description: predictive session sharding at line rate (XDP load balancer)\n \
         shardline attaches an XDP program that routes each session to its shard set and a\n \
         daemon that forecasts each session's load and re-shards it before the load arrives.\n \
         Run `shardline doctor` first; copy /usr/share/doc/shardline/shardline.example.toml\n \
         to /etc/shardline/shardline.toml, then `systemctl enable --now shardline`.\n"
    )
}

/// The staged tree's size in KiB, for `Installed-Size`.
fn du_kib(dir: &Path) -> Result<u64> {
    let out = output(Command::new("du").args(["-sk"]).arg(dir))?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected du output {out:?}"))
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(dir) = to.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_comes_from_clap_s_version_line() {
        assert_eq!(parse_version("shardline 0.1.0\n").as_deref(), Some("0.1.0"));
        assert_eq!(
            parse_version("shardline 1.2.3~rc1").as_deref(),
            Some("1.2.3~rc1")
        );
        assert_eq!(parse_version("other 0.1.0"), None);
        assert_eq!(parse_version("shardline 0.1 0"), None);
    }

    #[test]
    fn the_control_file_has_the_fields_dpkg_requires_and_a_folded_description() {
        let c = control("0.1.0", "amd64", 12345);
        for field in [
            "Package: shardline\n",
            "Version: 0.1.0\n",
            "Architecture: amd64\n",
        ] {
            assert!(c.contains(field), "{c}");
        }
        assert!(c.contains("Installed-Size: 12345\n"), "{c}");
        // Every continuation line of a multi-line field starts with one space.
        let description = c.split_once("Description: ").unwrap().1;
        for line in description.lines().skip(1) {
            assert!(line.starts_with(' ') && !line.starts_with("  "), "{line:?}");
        }
        assert!(c.ends_with('\n'));
    }
}
