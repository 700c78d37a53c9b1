//! The million-session figures of `bench` (`raft.reshard_10k_ms`, `control.tick_1m_full_ms`,
//! `memory.daemon_rss_mib_1m_sessions`): carried over when criterion's results replace the
//! `control` section, and rendered as one Markdown section.

use std::fmt::Write as _;

use serde_json::Value;

/// The `control` fields `shardline-bench` writes (criterion writes the rest).
const CONTROL_FIELDS: [&str; 2] = ["tick_1m_full_ms", "tick_1m_full"];

/// `criterion` (the new `control` section) with the fields of `kernel` (the one
/// `shardline-bench` wrote) that criterion does not measure.
pub fn control(kernel: &Value, mut criterion: Value) -> Value {
    if let Some(out) = criterion.as_object_mut() {
        for field in CONTROL_FIELDS {
            if let Some(v) = kernel.get(field) {
                out.insert(field.to_owned(), v.clone());
            }
        }
    }
    criterion
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "n/a".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One figure's row: its value, or the error its case failed with.
fn row(md: &mut String, label: &str, value: &Value, detail: &Value, unit: &str, target: &str) {
    let figure = match detail["error"].as_str() {
        Some(e) => format!("failed: {e}"),
        None => format!("{} {unit}", cell(value)),
    };
    let _ = writeln!(md, "| {label} | {figure} | {target} |");
}

/// The section's Markdown.
pub fn markdown(md: &mut String, results: &Value) {
    let (raft, control, memory) = (&results["raft"], &results["control"], &results["memory"]);
    let _ = writeln!(md, "## A million sessions, end to end\n");
    let _ = writeln!(md, "| figure | measured | target |\n|---|---:|---:|");
    let reshard = &raft["reshard_10k"];
    row(
        md,
        &format!(
            "10,000 sessions re-placed in one entry, decision to every node's maps (3 nodes, {} sessions loaded; median)",
            cell(&reshard["sessions_loaded"])
        ),
        &raft["reshard_10k_ms"],
        reshard,
        "ms",
        "< 100 ms",
    );
    let tick = &control["tick_1m_full"];
    row(
        md,
        &format!(
            "control tick over {} sessions with the counter read and the apply (median)",
            cell(&tick["sessions"])
        ),
        &control["tick_1m_full_ms"],
        tick,
        "ms",
        "",
    );
    let daemon = &memory["daemon"];
    row(
        md,
        &format!(
            "running daemon's peak RSS with {} sessions placed through its API",
            cell(&daemon["sessions"])
        ),
        &memory["daemon_rss_mib_1m_sessions"],
        daemon,
        "MiB",
        "< 256 MiB",
    );
    row(
        md,
        "the same daemon's peak RSS across a backend change and two restarts on its store (pins kept, pins removed)",
        &daemon["rss_mib"]["peak_any"],
        daemon,
        "MiB",
        "< 256 MiB",
    );
    row(
        md,
        "the same daemon's peak RSS restarted on its store with its pinned maps gone (a reboot)",
        &daemon["rss_mib"]["peak_restart_empty_maps"],
        daemon,
        "MiB",
        "< 256 MiB",
    );
    let _ = writeln!(
        md,
        "\nStages of the tick (median ms): {}. {}\n\n{}\n\n{}\n",
        cell(&tick["median_ms_by_stage"]),
        cell(&tick["setup"]),
        cell(&reshard["setup"]),
        cell(&daemon["setup"]),
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_kernel_fields_survive_criterion_and_failures_are_shown_as_such() {
        let kernel =
            json!({ "status": "x", "tick_1m_full_ms": 12.5, "tick_1m_full": { "sessions": 7 } });
        let merged = control(&kernel, json!({ "unit": "ns" }));
        assert_eq!(merged["tick_1m_full_ms"], 12.5);
        assert_eq!(merged["unit"], "ns");
        assert!(
            merged.get("status").is_none(),
            "criterion's own fields only"
        );
        let mut md = String::new();
        markdown(
            &mut md,
            &json!({ "control": merged, "raft": { "reshard_10k": { "error": "no leader" } } }),
        );
        assert!(md.contains("| 12.5 ms |"), "{md}");
        assert!(md.contains("failed: no leader"), "{md}");
    }
}
