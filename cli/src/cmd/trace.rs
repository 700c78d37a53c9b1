//! `shardline trace`: kernel and replay verdicts for captured or hand-written frames.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use shardline::{
    config::Config,
    trace::{
        capture::{parse_hex, read_capture, CapturedFrame},
        retarget::retarget as point_at_service,
        tables_for, TraceLine, Tracer,
    },
};

/// Run packets through the XDP program (BPF_PROG_TEST_RUN) and the userspace replay.
#[derive(Args)]
pub struct TraceArgs {
    /// A pcap or pcapng capture (Ethernet, raw IP, Linux cooked SLL/SLL2).
    #[arg(long, conflicts_with = "hex", required_unless_present = "hex")]
    pcap: Option<PathBuf>,
    /// One frame as hex bytes (Ethernet first).
    #[arg(long)]
    hex: Option<String>,
    /// Tables to trace with when no daemon has pinned live ones (default: the example
    /// configuration shipped with shardline).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Point every IPv4/IPv6 packet at the first service of its family (address and port).
    #[arg(long)]
    retarget: bool,
    /// One JSON object per packet.
    #[arg(long)]
    json: bool,
}

/// The example configuration, the tracer's default tables.
const EXAMPLE_CONFIG: &str = include_str!("../../../shardline.example.toml");

/// Traces every frame and prints one line (or JSON object) per packet.
pub fn run(a: TraceArgs) -> anyhow::Result<()> {
    let config = match &a.config {
        Some(path) => Config::load(path)?,
        None => Config::parse(EXAMPLE_CONFIG, "shardline.example.toml")?,
    };
    let frames = match (&a.pcap, &a.hex) {
        (Some(path), _) => {
            let capture = read_capture(path)?;
            if capture.skipped_blocks + capture.skipped_options > 0 {
                eprintln!(
                    "trace: {} pcapng blocks and {} options without packets skipped",
                    capture.skipped_blocks, capture.skipped_options
                );
            }
            if let Some(why) = &capture.truncated {
                eprintln!("trace: the capture ends early: {why}; the packets before it are traced");
            }
            capture.frames
        }
        (None, Some(text)) => vec![CapturedFrame::Frame(
            parse_hex(text).map_err(|e| anyhow::anyhow!("--hex: {e}"))?,
        )],
        (None, None) => anyhow::bail!("give --pcap FILE or --hex BYTES"),
    };
    let (tables, live) = tables_for(&config.pin_dir, &config)?;
    let mut dataplane = Tracer::new(tables).context("loading the XDP program")?;
    if live {
        eprintln!(
            "trace: using the live tables pinned in {}",
            config.pin_dir.display()
        );
    }
    if !a.json {
        println!("{}", TraceLine::TEXT_HEADER);
    }
    let (mut traced, mut skipped, mut disagree) = (0usize, 0usize, 0usize);
    for (index, captured) in frames.into_iter().enumerate() {
        let CapturedFrame::Frame(mut frame) = captured else {
            skipped += 1;
            continue;
        };
        if a.retarget {
            point_at_service(&mut frame, &config.services);
        }
        let Some(line) = dataplane.trace(index, &frame) else {
            // Shorter than an Ethernet header or larger than a test-run buffer.
            skipped += 1;
            continue;
        };
        traced += 1;
        disagree += usize::from(!line.agree);
        if a.json {
            println!("{}", serde_json::to_string(&line)?);
        } else {
            print!("{}", line.text());
        }
    }
    eprintln!("trace: {traced} traced, {skipped} skipped, {disagree} disagreements between kernel and replay");
    Ok(())
}
