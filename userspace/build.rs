//! Builds the eBPF objects (nightly, bpfel-unknown-none) into OUT_DIR, as aya-template does.
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../dataplane-ebpf");
    aya_build::build_ebpf(
        [Package {
            name: "dataplane-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::default(),
    )
}
