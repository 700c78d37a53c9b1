//! The Debian package `cargo xtask package` builds: unpacked with `dpkg -x` into a scratch
//! root, it holds the binary, the systemd unit, the example config, man pages and completions,
//! and the packaged binary runs (`--version`, `doctor --json`). Needs no root.
//!
//! The package is `$SHARDLINE_DEB`, or the newest `shardline_*.deb` in the target directory's
//! `debian/` (where `cargo xtask test` packs the release binary it built before the tests).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::support::bins;

/// Files every package must hold, relative to the root it is unpacked into.
const FILES: &[&str] = &[
    "usr/bin/shardline",
    "lib/systemd/system/shardline.service",
    "usr/share/doc/shardline/shardline.example.toml",
    "usr/share/man/man1/shardline.1.gz",
    // The unit's `Documentation=` names this page.
    "usr/share/man/man1/shardline-daemon.1.gz",
    "usr/share/man/man1/shardline-doctor.1.gz",
    "usr/share/bash-completion/completions/shardline",
    "usr/share/zsh/vendor-completions/_shardline",
    "usr/share/fish/vendor_completions.d/shardline.fish",
];

/// The package under test; panics with what to run when there is none, or when it is older
/// than the release binary (it would test yesterday's binary).
fn the_package() -> PathBuf {
    if let Some(deb) = std::env::var_os("SHARDLINE_DEB") {
        return PathBuf::from(deb);
    }
    let binary = bins().shardline;
    let dir = binary
        .parent()
        .and_then(Path::parent)
        .expect("the release directory has a parent")
        .join("debian");
    let mtime = |p: &Path| p.metadata().and_then(|m| m.modified()).ok();
    let deb = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "deb")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("shardline_"))
        })
        .max_by_key(|p| mtime(p))
        .unwrap_or_else(|| {
            panic!(
                "no shardline_*.deb in {}: run `cargo xtask package --no-build` (or set SHARDLINE_DEB)",
                dir.display()
            )
        });
    assert!(
        mtime(&deb) >= mtime(&binary),
        "{} is older than {}: run `cargo xtask package --no-build` again",
        deb.display(),
        binary.display()
    );
    deb
}

/// A scratch root removed on drop, even on panic.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn package_unpacks_and_its_binary_runs() {
    let deb = the_package();
    let root = Scratch(std::env::temp_dir().join(format!("shardline-deb-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&root.0);
    let status = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(&root.0)
        .status()
        .expect("dpkg runs");
    assert!(
        status.success(),
        "dpkg -x {} failed: {status}",
        deb.display()
    );
    for file in FILES {
        assert!(
            root.0.join(file).is_file(),
            "{} lacks /{file}",
            deb.display()
        );
    }
    let fields = Command::new("dpkg-deb")
        .args(["--field"])
        .arg(&deb)
        .args(["Package", "Version"])
        .output()
        .expect("dpkg-deb runs");
    let fields = String::from_utf8_lossy(&fields.stdout);
    assert!(fields.contains("Package: shardline"), "{fields}");

    let packaged = root.0.join("usr/bin/shardline");
    let out = Command::new(&packaged)
        .arg("--version")
        .output()
        .expect("the packaged binary starts");
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "--version failed: {version}");
    let version = version
        .trim()
        .strip_prefix("shardline ")
        .unwrap_or_else(|| panic!("--version printed {version:?}"));
    assert!(
        fields.contains(&format!("Version: {version}")),
        "the package's version is the binary's {version}: {fields}"
    );

    // doctor exits 1 when a check fails (this host may lack what a real one has): the JSON is
    // what is under test, and it must be there either way.
    let out = Command::new(&packaged)
        .args(["doctor", "--json"])
        .output()
        .expect("doctor starts");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "doctor --json exited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("doctor --json: {e}:\n{text}"));
    let checks = checks
        .as_array()
        .unwrap_or_else(|| panic!("not an array:\n{text}"));
    assert!(!checks.is_empty(), "doctor ran no check");
    for c in checks {
        let obj = c
            .as_object()
            .unwrap_or_else(|| panic!("not an object: {c}"));
        let mut keys: Vec<_> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["check", "detail", "fix", "status"], "{c}");
        assert!(obj.values().all(|v| v.is_string()), "{c}");
        let status = obj["status"].as_str().unwrap();
        assert!(matches!(status, "pass" | "warn" | "fail"), "{c}");
        if status != "pass" {
            assert!(
                !obj["fix"].as_str().unwrap().is_empty(),
                "a {status} says what to do: {c}"
            );
        }
    }
    let failed = checks.iter().any(|c| c["status"] == "fail");
    assert_eq!(
        out.status.code() == Some(1),
        failed,
        "exit code follows the checks:\n{text}"
    );
}
