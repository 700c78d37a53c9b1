//! `bench`'s reporting: merges criterion's estimates into the JSON results that
//! `shardline-bench` wrote, and renders that JSON as the Markdown summary the README
//! links to. Only numbers found in those files are printed; anything missing says so.

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

/// Criterion's results under `criterion_dir` (`<group>/<bench>/new/{benchmark,estimates}.json`)
/// as `{"unit": "ns", "benchmarks": {full_id: {mean_ns, median_ns}}}`.
pub fn criterion_results(criterion_dir: &Path, quick: bool) -> Value {
    let mut benches = Map::new();
    let mut stack = vec![criterion_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                if let Some((id, v)) = read_estimate(&path) {
                    benches.insert(id, v);
                }
            } else if path
                .file_name()
                .is_some_and(|n| n != "report" && n != "base")
            {
                stack.push(path);
            }
        }
    }
    if benches.is_empty() {
        return json!({ "status": format!("no criterion results under {}", criterion_dir.display()) });
    }
    json!({
        "unit": "ns",
        "tool": "criterion (crate shardline-bench, benches/control.rs and benches/tick.rs)",
        "quick": quick,
        "benchmarks": benches,
    })
}

fn read_estimate(new_dir: &Path) -> Option<(String, Value)> {
    let bench: Value =
        serde_json::from_str(&fs::read_to_string(new_dir.join("benchmark.json")).ok()?).ok()?;
    let est: Value =
        serde_json::from_str(&fs::read_to_string(new_dir.join("estimates.json")).ok()?).ok()?;
    let id = bench["full_id"].as_str()?.to_owned();
    let mean = est["mean"]["point_estimate"].as_f64()?;
    let median = est["median"]["point_estimate"].as_f64()?;
    Some((
        id,
        json!({ "mean_ns": round(mean, 2), "median_ns": round(median, 2) }),
    ))
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// A JSON value as table text: numbers as they are, null as "n/a".
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "n/a".into(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        other => other.to_string(),
    }
}

/// A per-packet case's ratio to `XDP_TX`, then those to a related case of the same run
/// (`per_packet.rs`'s beside fields: hot entry, static MAC, the FIB's `XDP_TX`, Katran's
/// counterpart paths).
fn vs_xdp_tx(case: &Value) -> String {
    let beside = [
        ("vs_hot_entry", "hot entry"),
        ("vs_static_mac", "`header_hit_v4`"),
        ("vs_fib_tx", "`header_hit_v4_fib`"),
        ("vs_katran", "Katran"),
        ("vs_katran_new_flow", "Katran's new flow"),
    ];
    beside
        .iter()
        .filter_map(|(f, base)| Some(format!("; {} × {base}", case[*f].as_f64()?)))
        .fold(cell(&case["vs_xdp_tx"]), |out, b| out + &b)
}

/// A number without its fraction, or [`cell`] of anything else.
fn whole(v: &Value) -> String {
    v.as_f64().map_or_else(|| cell(v), |x| format!("{x:.0}"))
}

/// The Markdown summary of `results`.
pub fn markdown(results: &Value) -> String {
    let mut md = String::new();
    let m = &results["machine"];
    let _ = writeln!(md, "# shardline benchmark results\n");
    let _ = writeln!(
        md,
        "Command: `{}`. Machine: {} ({} cores, {} GiB), Linux {}, BPF JIT {}, load average at \
         start {}. {}.\n",
        cell(&results["command"]),
        cell(&m["cpu"]),
        cell(&m["cores"]),
        cell(&m["memory_gib"]),
        cell(&m["kernel"]),
        if m["bpf_jit"].as_bool() == Some(true) {
            "on"
        } else {
            "off"
        },
        cell(&m["loadavg_at_start"]),
        cell(&m["note"]),
    );
    let _ = writeln!(
        md,
        "Raw data: [`latest.json`](latest.json). Every number below was measured by this run; \
         sections that cannot be measured yet say so.\n"
    );

    let _ = writeln!(md, "## Dataplane cost per packet (`BPF_PROG_TEST_RUN`)\n");
    let method = &results["dataplane_method"];
    let _ = writeln!(
        md,
        "Method: {}; repeat {} per call, {} rounds, {}.\n",
        cell(&method["mode"]),
        cell(&method["repeat"]),
        cell(&method["rounds"]),
        cell(&method["statistic"])
    );
    if let Some(by) = method["measured_by"].as_str() {
        // A section re-measured on its own and merged into this file says how and where.
        let m = &method["machine"];
        let _ = writeln!(
            md,
            "Measured: {by} Machine: {} ({} cores), Linux {}.\n",
            cell(&m["cpu"]),
            cell(&m["cores"]),
            cell(&m["kernel"]),
        );
    }
    let _ = writeln!(
        md,
        "| case | ns/pkt | × XDP_TX | Mpps/core | × 10 GbE 64 B line rate (67.2 ns) | target | frame | what |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---|---:|---|");
    for case in results["dataplane"].as_array().into_iter().flatten() {
        let target = match (&case["target_vs_xdp_tx"], &case["meets_target"]) {
            (Value::Number(t), Value::Bool(ok)) => {
                format!("≤ {t} × — {}", if *ok { "met" } else { "**missed**" })
            }
            _ => String::new(),
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {} | {} | {} | {} | {} B | {} |",
            cell(&case["case"]),
            cell(&case["ns_per_pkt"]),
            vs_xdp_tx(case),
            cell(&case["mpps_per_core"]),
            cell(&case["vs_10gbe_64b_line_rate"]),
            target,
            cell(&case["frame_bytes"]),
            cell(&case["what"]),
        );
    }
    let wrapper = &results["dataplane_wrapper"];
    let _ = writeln!(
        md,
        "\nThe balancer grows the frame, and repeat mode reuses one buffer, so shardline's cases \
         run inside a bench-only wrapper that undoes the rewrite after every repeat. Its cost, \
         {} ns/pkt ({}), is subtracted: {}. Every shardline repeat was checked to be counted as \
         `forwarded`. The `katran_` cases: {}. Katran's wrapper cost {} ns/pkt ({}). Published \
         anchors (as quoted in issue 7): Katran {}; XDP paper {}.\n",
        cell(&wrapper["ns_per_pkt"]),
        cell(&wrapper["measured_as"]),
        cell(&method["ns_per_pkt"]),
        cell(&method["katran"]),
        cell(&wrapper["katran_ns_per_pkt"]),
        cell(&wrapper["katran_measured_as"]),
        cell(&method["anchors_quoted_in_issue_7"]["katran"]),
        cell(&method["anchors_quoted_in_issue_7"]["xdp_paper"]),
    );

    if let Some(diags) = results["dataplane_diagnostics"].as_array() {
        let _ = writeln!(
            md,
            "Where the time goes — cheaper paths through the same program, same wrapper and \
             subtraction:\n"
        );
        let _ = writeln!(md, "| path | ns/pkt | × XDP_TX | what |");
        let _ = writeln!(md, "|---|---:|---:|---|");
        for d in diags {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} |",
                cell(&d["case"]),
                cell(&d["ns_per_pkt"]),
                cell(&d["vs_xdp_tx"]),
                cell(&d["what"])
            );
        }
        let _ = writeln!(md);
    }
    let walk = &results["dataplane_start_walk_1m"];
    if !walk.is_null() {
        let _ = writeln!(
            md,
            "Start-up walk of `SESSIONS` over {} sessions: {} ms ({}).\n",
            cell(&walk["sessions_walked"]),
            cell(&walk["ms"]),
            cell(&walk["what"])
        );
    }
    let live = &results["dataplane_live_frames_check"];
    if !live.is_null() {
        let counted = live["counted"]
            .as_object()
            .map(|c| {
                c.iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| cell(&live["error"]));
        let _ = writeln!(
            md,
            "Live-frames check (`BPF_F_TEST_XDP_LIVE_FRAMES`, repeat {}, batch {}, ingress: {}): \
             the counters saw {}. {}.\n",
            cell(&live["repeat"]),
            cell(&live["batch"]),
            cell(&live["ingress"]),
            counted,
            cell(&live["conclusion"]),
        );
    }

    let v = &results["veth"];
    let _ = writeln!(md, "## Throughput on veth (netns lab)\n");
    let _ = writeln!(
        md,
        "| forwarder | forwarded pkt/s (at backends) | answered pkt/s (at client) | offered pkt/s |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|");
    for (name, key) in [
        ("shardline (XDP)", "shardline"),
        ("nginx stream (`hash $remote_addr consistent`)", "nginx"),
        ("minimal tokio UDP proxy", "tokio_proxy"),
    ] {
        let d = &v[key];
        if d["error"].is_null() {
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} |",
                cell(&d["forwarded_pps"]),
                cell(&d["answered_pps"]),
                cell(&d["offered_pps"])
            );
        } else {
            let _ = writeln!(md, "| {name} | failed: {} | | |", cell(&d["error"]));
        }
    }
    let _ = writeln!(
        md,
        "\nForwarded: shardline / nginx = **{}** (target ≥ {}: {}); shardline / tokio proxy = {}. \
         Answered: shardline / nginx = {}; shardline / tokio proxy = {}. {} s per run, {}-byte \
         frames. {}\n",
        cell(&v["ratio"]),
        cell(&v["target_ratio"]),
        match v["meets_target"].as_bool() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        },
        cell(&v["ratio_vs_tokio_proxy"]),
        cell(&v["answered_ratio"]),
        cell(&v["answered_ratio_vs_tokio_proxy"]),
        cell(&v["seconds_per_run"]),
        cell(&v["frame_bytes"]),
        cell(&v["notes"]),
    );
    let cpu = &v["cpu_ns_per_pkt"];
    let _ = writeln!(
        md,
        "CPU per forwarded packet, load balancer's side, at {} pkt/s offered (all forwarded: \
         {}): shardline {} ns, nginx {} ns, tokio proxy {} ns; nginx / shardline = **{}** \
         (target ≥ {}: {}).\n",
        cell(&v["cpu"]["offered_pps"]),
        cell(&v["cpu"]["all_forwarded"]),
        cell(&cpu["shardline"]),
        cell(&cpu["nginx"]),
        cell(&cpu["tokio_proxy"]),
        cell(&v["cpu_ratio"]),
        cell(&v["cpu_target_ratio"]),
        match v["cpu_meets_target"].as_bool() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        },
    );

    let s = &results["swap"];
    let _ = writeln!(md, "## Re-sharding swap\n");
    let _ = writeln!(md, "| step | time |");
    let _ = writeln!(md, "|---|---:|");
    for (label, key, unit) in [
        (
            "Maglev build in memory (65,537 slots, 100 backends)",
            "build_ms",
            "ms",
        ),
        (
            "write the idle half (65,537 map updates)",
            "idle_half_write_ms",
            "ms",
        ),
        ("**flip** (one GLOBALS write), median", "flip_us", "µs"),
        ("flip, p99", "flip_us_p99", "µs"),
        ("flip, slowest", "flip_us_max", "µs"),
        (
            "`DataplaneMaps::swap_maglev` end to end",
            "swap_maglev_total_ms",
            "ms",
        ),
        (
            "insert 10,000 session placements",
            "sessions_insert_10k_ms",
            "ms",
        ),
        (
            "update 10,000 session placements",
            "sessions_update_10k_ms",
            "ms",
        ),
    ] {
        let _ = writeln!(md, "| {label} | {} {unit} |", cell(&s[key]));
    }
    let _ = writeln!(
        md,
        "\nTarget: flip < 1 ms — {} (judged on the p99 of {} flips). {}\n",
        if s["meets_target"].as_bool() == Some(true) {
            "met"
        } else {
            "**missed**"
        },
        cell(&s["flips_timed"]),
        cell(&s["notes"]),
    );
    let t = &s["during_traffic"];
    if t.is_object() {
        let _ = writeln!(
            md,
            "**Misrouted during swaps: {}** of {} packets ({} of them a placed session's) sent \
             while {} swaps ran; not forwarded: {}. {} (`tests/reshard.rs` asserts the same on \
             the lab's real traffic: zero misrouted.)\n",
            cell(&t["misrouted"]),
            cell(&t["packets"]),
            cell(&t["placed_session_packets"]),
            cell(&t["swaps"]),
            cell(&t["not_forwarded"]),
            cell(&t["notes"]),
        );
    }

    let _ = writeln!(md, "## Control plane (criterion)\n");
    let c = &results["control"];
    match c["benchmarks"].as_object() {
        Some(benches) => {
            let _ = writeln!(md, "| benchmark | mean | median |");
            let _ = writeln!(md, "|---|---:|---:|");
            for (id, e) in benches {
                let _ = writeln!(
                    md,
                    "| `{id}` | {} | {} |",
                    duration(e["mean_ns"].as_f64()),
                    duration(e["median_ns"].as_f64())
                );
            }
            let quick = c["quick"].as_bool() == Some(true);
            let _ = writeln!(
                md,
                "\n{}\n",
                if quick {
                    "Quick settings (`SHARDLINE_BENCH_QUICK=1`: short warm-up and measurement)."
                } else {
                    "Criterion's settings: 3 s warm-up, 5 s measurement."
                }
            );
        }
        None => {
            let _ = writeln!(md, "{}\n", cell(&c["status"]));
        }
    }

    let mem = &results["memory"];
    let _ = writeln!(md, "## Memory with {} sessions\n", cell(&mem["sessions"]));
    let _ = writeln!(md, "| what | MiB |");
    let _ = writeln!(md, "|---|---:|");
    for (label, v) in [
        (
            "process RSS, balancer loaded",
            &mem["rss_mib"]["balancer_loaded"],
        ),
        (
            "process RSS, sessions held in a Snapshot",
            &mem["rss_mib"]["with_1m_sessions_in_snapshot"],
        ),
        (
            "process RSS, after loading them into SESSIONS",
            &mem["rss_mib"]["after_loading_sessions_into_map"],
        ),
        ("process peak RSS", &mem["rss_mib"]["peak"]),
        (
            "BPF map memory, all maps (memlock)",
            &mem["bpf_maps_memlock_mib_total"],
        ),
        (
            "BPF map memory, SESSIONS",
            &mem["bpf_maps"]["SESSIONS"]["memlock_mib"],
        ),
    ] {
        let _ = writeln!(md, "| {label} | {} |", cell(v));
    }
    let _ = writeln!(
        md,
        "\n{} bytes of SESSIONS map per session; loading took {} s. {}\n",
        cell(&mem["sessions_map_bytes_per_session"]),
        cell(&mem["insert_seconds"]),
        cell(&mem["notes"]),
    );

    let raft = &results["raft"];
    let _ = writeln!(md, "## Raft replication (3 nodes)\n");
    if !raft["status"].is_null() {
        let _ = writeln!(md, "{} — {}.\n", cell(&raft["status"]), cell(&raft["why"]));
    } else if raft["error"].is_null() {
        let _ = writeln!(md, "{}\n", cell(&raft["setup"]));
        let _ = writeln!(md, "| commit latency | p50 | p99 |\n|---|---|---|");
        for (label, key) in [
            ("one writer on the leader", "commit_latency_leader"),
            (
                "one writer through a follower",
                "commit_latency_via_follower",
            ),
        ] {
            let _ = writeln!(
                md,
                "| {label} | {} µs | {} µs |",
                cell(&raft[key]["p50_us"]),
                cell(&raft[key]["p99_us"])
            );
        }
        let _ = writeln!(
            md,
            "\nThroughput: {} writes/s with {} concurrent writers, one log entry per write; {} writes/s through the group commit (commit latency under that load p50 {} µs, p99 {} µs).\n\nPublished, for scale: {}; {}.\n",
            cell(&raft["throughput"]["writes_per_second"]),
            cell(&raft["throughput"]["writers"]),
            cell(&raft["batched_writes_per_s"]),
            cell(&raft["batched"]["commit_latency"]["p50_us"]),
            cell(&raft["batched"]["commit_latency"]["p99_us"]),
            cell(&raft["published"]["openraft"]),
            cell(&raft["published"]["etcd"]),
        );
    } else {
        let _ = writeln!(md, "Failed: {}\n", cell(&raft["error"]));
    }
    let _ = writeln!(md, "## Control-loop tick over 1,000,000 sessions\n");
    let _ = writeln!(
        md,
        "One tick (ingest + forecast + decide) on one core, criterion median: {}.\n",
        duration(results["forecast_tick"]["median_ns"].as_f64())
    );
    crate::scale::markdown(&mut md, results);
    replay_markdown(&mut md, &results["replay"]);
    md
}

fn replay_markdown(md: &mut String, replay: &Value) {
    let _ = writeln!(
        md,
        "## Prediction against reaction (`shardline replay`)
"
    );
    let Some(traces) = replay["traces"].as_object() else {
        let _ = writeln!(md, "Not run: {}\n", cell(&replay["status"]));
        return;
    };
    let _ = writeln!(
        md,
        "`shardline-bench`'s replay suite: `shardline replay` with every default on each shipped \
         trace ({} rows; docs/replay.md), met on {} of {}. Overload in backend-seconds; cost in \
         shard-seconds; goal: predictive ≤ ½ reactive's overload at ≤ 1.1 × its cost and ≤ 1.3 × \
         the oracle's.\n",
        replay["rows"].as_str().unwrap_or("all"),
        cell(&replay["goal_met"]),
        cell(&replay["traces_replayed"])
    );
    let _ = writeln!(
        md,
        "| trace | overload pred / react | cost pred / react / static / oracle | goal |\n|---|---|---|---|"
    );
    for (name, r) in traces {
        let c = &r["controllers"];
        let num = |k: &str, f: &str| {
            c[k][f]
                .as_f64()
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "n/a".into())
        };
        let _ = writeln!(
            md,
            "| {name} | {} / {} | {} / {} / {} / {} | {} |",
            num("predictive", "overload_seconds"),
            num("reactive", "overload_seconds"),
            num("predictive", "shard_seconds"),
            num("reactive", "shard_seconds"),
            num("static", "shard_seconds"),
            num("oracle", "shard_seconds"),
            match (r["goal_met"].as_bool(), r["why_missed"].as_str()) {
                (Some(true), _) => "met".to_owned(),
                (_, Some(why)) => format!("missed: {why}"),
                _ => cell(&r["error"]),
            }
        );
    }
    let speed = &replay["speed"];
    if speed.is_object() {
        let _ = writeln!(
            md,
            "\nSpeed: {} sessions × {} ticks × 4 controllers in {} s: {} session-ticks/s; 100,000 \
             sessions over 86,400 ticks would take {} s (target: 60 s).",
            whole(&speed["sessions"]),
            whole(&speed["ticks"]),
            cell(&speed["seconds"]),
            whole(&speed["session_ticks_per_sec"]),
            whole(&speed["projected_secs_100k_sessions_86400_ticks"])
        );
        let day = &speed["day_5min_rows"];
        if day.is_object() {
            let _ = writeln!(
                md,
                "A simulated day of the traces' 5-minute rows: {} sessions × {} ticks of {} s × 4 \
                 controllers on one thread took {} s of CPU, {} s wall (target: 60 s){}: `{}`.",
                whole(&day["sessions"]),
                whole(&day["ticks"]),
                cell(&day["tick_secs"]),
                cell(&day["cpu_seconds"]),
                cell(&day["wall_seconds"]),
                day["note"]
                    .as_str()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                cell(&day["command"])
            );
        }
    }
    let _ = writeln!(md);
}

/// The 1M-session tick from criterion's `control_tick` group, if it ran.
fn forecast_tick(control: &Value) -> Value {
    control["benchmarks"]
        .as_object()
        .and_then(|b| b.iter().find(|(id, _)| id.starts_with("control_tick/")))
        .map(|(id, v)| json!({ "benchmark": id, "median_ns": v["median_ns"], "mean_ns": v["mean_ns"] }))
        .unwrap_or_else(|| json!({ "status": "criterion's control_tick group did not run" }))
}

fn duration(ns: Option<f64>) -> String {
    match ns {
        None => "n/a".into(),
        Some(ns) if ns >= 1e6 => format!("{:.2} ms", ns / 1e6),
        Some(ns) if ns >= 1e3 => format!("{:.2} µs", ns / 1e3),
        Some(ns) => format!("{ns:.2} ns"),
    }
}

/// Reads `json_path`, sets its `control` section from criterion (and `replay`, when given; a
/// `--report-only` run keeps the one in the file), writes it back and writes the
/// Markdown next to it (`.md`).
pub fn finish(json_path: &Path, criterion_dir: &Path, quick: bool) -> Result<()> {
    let text = fs::read_to_string(json_path)
        .with_context(|| format!("reading {}", json_path.display()))?;
    let mut results: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", json_path.display()))?;
    // A report-only run where criterion's output is absent (another machine, a clean target
    // directory) keeps the criterion figures the JSON already holds instead of blanking them.
    if criterion_dir.exists() || results["control"]["benchmarks"].is_null() {
        results["control"] =
            crate::scale::control(&results["control"], criterion_results(criterion_dir, quick));
        results["forecast_tick"] = forecast_tick(&results["control"]);
    }
    fs::write(
        json_path,
        serde_json::to_string_pretty(&results).context("serialising results")? + "\n",
    )
    .with_context(|| format!("writing {}", json_path.display()))?;
    let png_path = json_path.with_extension("png");
    let chart = match crate::chart::dataplane_png(&results, &png_path) {
        Ok(()) => true,
        Err(e) => {
            println!("xtask: no chart: {e:#}");
            false
        }
    };
    let md_path = json_path.with_extension("md");
    let mut md = markdown(&results);
    if chart {
        let name = png_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        md = md.replacen(
            "## Dataplane cost per packet (`BPF_PROG_TEST_RUN`)\n",
            &format!(
                "## Dataplane cost per packet (`BPF_PROG_TEST_RUN`)\n\n![ns per packet]({name})\n"
            ),
            1,
        );
    }
    fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
    println!(
        "xtask: wrote {} and {}",
        json_path.display(),
        md_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_renders_per_trace_with_its_goal() {
        let scores = json!({ "overload_seconds": 7.0, "shard_seconds": 100.0 });
        let md = markdown(&json!({ "replay": { "rows": "all", "goal_met": 0,
            "traces_replayed": 1, "traces": {
            "taxi": { "controllers": { "predictive": scores, "reactive": scores,
                "static": scores, "oracle": scores }, "goal_met": false, "why_missed": "why" } },
            "speed": { "sessions": 1000, "ticks": 4032, "seconds": 200.0,
                "session_ticks_per_sec": 20160.0,
                "projected_secs_100k_sessions_86400_ticks": 428571.0,
                "day_5min_rows": { "sessions": 100000, "ticks": 288, "tick_secs": 300.0,
                    "cpu_seconds": 42.5, "wall_seconds": 43.5, "command": "shardline replay" } } } }));
        assert!(
            md.contains("| taxi | 7 / 7 | 100 / 100 / 100 / 100 | missed: why |"),
            "{md}"
        );
        assert!(md.contains("met on 0 of 1"), "{md}");
        assert!(md.contains("20160 session-ticks/s"), "{md}");
        assert!(md.contains("took 42.5 s of CPU, 43.5 s wall"), "{md}");
        let none = markdown(&json!({}));
        assert!(none.contains("## Prediction against reaction"), "{none}");
    }

    #[test]
    fn a_per_packet_row_carries_its_ratios_to_related_cases() {
        let case = json!({ "case": "header_hit_v4_redirect", "vs_xdp_tx": 9.64,
            "vs_static_mac": 2.14, "vs_fib_tx": 1.02 });
        let md = markdown(&json!({ "dataplane": [case] }));
        let want = "| 9.64; 2.14 × `header_hit_v4`; 1.02 × `header_hit_v4_fib` |";
        assert!(md.contains(want), "{md}");
    }

    #[test]
    fn the_start_walk_renders_when_measured() {
        let walk = json!({ "sessions_walked": 1_000_003, "ms": 663.2, "what": "the walk" });
        let md = markdown(&json!({ "dataplane": [], "dataplane_start_walk_1m": walk }));
        assert!(
            md.contains("over 1000003 sessions: 663.2 ms (the walk)"),
            "{md}"
        );
        let md = markdown(&json!({ "dataplane": [] }));
        assert!(!md.contains("Start-up walk"), "{md}");
    }

    #[test]
    fn missing_sections_render_as_not_available() {
        let md = markdown(&json!({ "raft": { "status": "not built yet", "why": "no raft" } }));
        assert!(md.contains("not built yet — no raft"));
        assert!(md.contains("n/a"));
    }
}
