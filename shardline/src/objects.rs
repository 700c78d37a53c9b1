//! The eBPF objects built by `build.rs`, embedded in the binary.

/// The load-balancer object (`shardline` XDP program, pinned maps).
pub static LB_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shardline-lb"));
/// The auxiliary object (`shardline_decap`, `shardline_pass`).
pub static AUX_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/shardline-aux"));
