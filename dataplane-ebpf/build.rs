//! Rebuild the eBPF objects when bpf-linker changes (it is not a cargo dependency), and tell
//! bpf-linker to let LLVM expand `memset` / `memcpy` inline.
fn main() {
    // bpf-linker passes `-bpf-expand-memcpy-in-order` by default, which stops LLVM from
    // expanding small memsets: zeroing a 32-byte struct then becomes a call to
    // compiler_builtins' byte-at-a-time `memset`, about 160 instructions on every packet that
    // is not forwarded (measured with `shardline-bench`).
    println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
    // aya-build passes the host's architecture as `bpf_target_arch` (the fronts need x86-64).
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"arm\", \"riscv64\", \"powerpc64\", \"s390x\", \"mips\", \"loongarch64\"))"
    );
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
