//! Builds the eBPF objects (nightly, bpfel-unknown-none) into OUT_DIR, as aya-template does.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../dataplane-ebpf");
    // aya_build reruns on changes under the eBPF crate only (aya-template gets the rest through
    // a build-dependency on it). The programs compile `shardline-common` in too: without this,
    // a change there leaves a stale kernel object that no longer matches the userspace replay.
    println!(
        "cargo:rerun-if-changed={}",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../common")
    );
    aya_build::build_ebpf(
        [Package {
            name: "dataplane-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
