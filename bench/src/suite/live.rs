//! A check of `BPF_F_TEST_XDP_LIVE_FRAMES` for the balancer, not a figure of merit.
//!
//! Without a context the kernel runs the program as if the frame arrived on queue 0 of the
//! calling thread's namespace's loopback device (`net/bpf/test_run.c`), where an `XDP_TX` has
//! no `ndo_xdp_xmit` to go to and an `XDP_PASS` enters that namespace's stack. So the check
//! builds a private network namespace with a veth pair (`XDP_PASS` attached to both ends, so
//! the ingress queue is registered and the peer accepts redirected frames) and runs the
//! unwrapped `shardline` program in live-frames mode with `ingress_ifindex` set to one end: its
//! `XDP_TX` becomes a transmit out of that end into the peer, whose stack drops the frames
//! (they are addressed to a backend MAC that does not exist there). Nothing leaves the
//! namespace. The per-reason counters then say how many repeats saw the original frame
//! (`forwarded`) and how many saw a recycled page still holding an earlier repeat's output.

use aya::programs::{TestRun, TestRunAttrs, TestRunOptions, XdpMode};
use serde_json::{json, Value};
use shardline_common::verdict::Reason;

use super::{loaded_balancer, program_err, BenchError};
use shardline::loader::{load_aux, xdp_program};
use shardline_lab::netns::Netns;

/// Repeats of the live run.
pub const LIVE_REPEAT: u32 = 1_000_000;
/// Frames per batch (the kernel's default is 64, its maximum 256).
pub const LIVE_BATCH: u32 = 64;

/// `struct xdp_md` for `ctx_in`: data 0, data_end `len`, ingress on `ifindex`, queue 0.
fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// Runs the check with `frame` (a header-mode packet the balancer forwards).
pub fn run(frame: &[u8]) -> Result<Value, BenchError> {
    let ns = Netns::create(&format!("sl-live-{}", std::process::id()))?;
    ns.ip(&["link", "add", "lva", "type", "veth", "peer", "name", "lvb"])?;
    ns.ip(&["link", "set", "lva", "up"])?;
    ns.ip(&["link", "set", "lvb", "up"])?;
    let mut lb = loaded_balancer()?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| -> Result<Value, BenchError> {
                ns.enter_current_thread()?;
                let mut aux = load_aux()?;
                let pass = xdp_program(&mut aux, "shardline_pass")?;
                pass.load().map_err(program_err("shardline_pass"))?;
                for dev in ["lva", "lvb"] {
                    pass.attach(dev, XdpMode::Driver)
                        .map_err(program_err("shardline_pass (attach to veth)"))?;
                }
                let ifindex = nix::net::if_::if_nametoindex("lva").map_err(|e| BenchError::Io {
                    what: "finding lva's ifindex".into(),
                    source: e.into(),
                })?;
                let ctx = xdp_md(frame.len(), ifindex);
                let before = lb.maps.reason_counts()?;
                let program = xdp_program(&mut lb.ebpf, "shardline")?;
                let result = program
                    .test_run(TestRunOptions {
                        data_in: Some(frame),
                        ctx_in: Some(&ctx),
                        repeat: LIVE_REPEAT,
                        attrs: TestRunAttrs::new().xdp_live_frames(LIVE_BATCH),
                        ..TestRunOptions::new()
                    })
                    .map_err(program_err("shardline (live frames)"))?;
                let after = lb.maps.reason_counts()?;
                let mut counted = serde_json::Map::new();
                let mut forwarded = 0;
                for ((reason, a), (_, b)) in after.iter().zip(&before) {
                    if a > b {
                        counted.insert(reason.name().into(), json!(a - b));
                    }
                    if *reason == Reason::Forwarded {
                        forwarded = a - b;
                    }
                }
                let every = forwarded == u64::from(LIVE_REPEAT);
                Ok(json!({
                    "repeat": LIVE_REPEAT,
                    "batch": LIVE_BATCH,
                    "ingress": "one end of a veth pair in a private namespace (ingress_ifindex in ctx_in)",
                    "default_ingress": "without ctx_in: the calling thread's namespace's loopback device, queue 0",
                    "counted": counted,
                    "every_repeat_saw_the_original_frame": every,
                    "ns_per_pkt_including_transmit": result.duration.as_nanos() as u64,
                    "conclusion": if every {
                        "every repeat was forwarded: frames were re-initialised per run here"
                    } else {
                        "not every repeat was forwarded: recycled pages kept an earlier repeat's \
                         output (the kernel resets only the data pointers), so live-frames mode \
                         cannot time the encapsulating path; the restoring wrapper is used instead"
                    },
                }))
            })
            .join()
            .unwrap_or_else(|_| Err(BenchError::Check("live-frames thread panicked".into())))
    })
}
