//! `replay`: issue 20's goal on each shipped trace, and the replay's speed.
//!
//! Each trace of `shared/data/traces` (or `$SHARDLINE_TRACES`) is replayed with every default
//! (one session, the first tenth of the rows a warm-up every controller runs on and none is
//! scored on; `--quick`: its first [`QUICK_ROWS`] rows) and reported with whether the goal
//! is met — predictive at most ½ the reactive `overload_seconds` at no more than 1.1 × its
//! `shard_seconds`, within 1.3 × the oracle's — and, where it misses, why (the replay's own
//! reason). The speed figure replays many phase-shifted sessions of one trace under all four
//! controllers and projects the time of 100,000 sessions over 86,400 one-second ticks; the day
//! figure measures 100,000 sessions over one simulated day of the traces' own 5-minute rows
//! (288 ticks of 300 s), CPU and wall seconds of the whole run on one thread (`--quick`: a
//! tenth of the sessions, scaled up, and said so in its `note`).

use std::{path::PathBuf, time::Instant};

use serde_json::{json, Value};
use shardline::replay::{self, report::Report, Options, Series};

use super::{round, BenchError};

/// Rows of each trace a quick run replays.
pub const QUICK_ROWS: usize = 1_000;

/// Sessions of the speed run (quick: fewer, on [`QUICK_ROWS`] rows).
const SPEED_SESSIONS: (usize, usize) = (1_000, 200);

/// The projection the speed figure is stated for: issue 20's scale target.
const TARGET_SESSION_TICKS: f64 = 100_000.0 * 86_400.0;

/// The day figure: sessions (quick: fewer, scaled up), ticks and seconds per tick — one day
/// of the shipped traces' 5-minute rows.
const DAY_SESSIONS: (usize, usize) = (100_000, 10_000);
const DAY_TICKS: usize = 288;
const DAY_TICK_SECS: f64 = 300.0;

/// CPU seconds the calling thread has used: the replay runs on it alone.
fn thread_cpu_seconds() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(0.0, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
}

/// 100,000 sessions of `series` (read in full) over a day of 5-minute rows, all four
/// controllers, on this thread: `{sessions, ticks, tick_secs, cpu_seconds, wall_seconds,
/// command}`, with a `note` when `quick` measured fewer sessions and scaled up.
fn day(series: &Series, path: &std::path::Path, quick: bool) -> Result<Value, BenchError> {
    let target = DAY_SESSIONS.0;
    let sessions = if quick { DAY_SESSIONS.1 } else { target };
    let options = Options {
        sessions: Some(sessions),
        tick_secs: Some(DAY_TICK_SECS),
        ticks: Some(DAY_TICKS),
        ..Options::default()
    };
    let (cpu, started) = (thread_cpu_seconds(), Instant::now());
    replay::run(std::slice::from_ref(series), &options)
        .map_err(|e| failed(format!("{}: {e}", series.name)))?;
    let scale = target as f64 / sessions as f64;
    let cpu = (thread_cpu_seconds() - cpu) * scale;
    let wall = started.elapsed().as_secs_f64() * scale;
    let mut out = json!({
        "sessions": target,
        "ticks": DAY_TICKS,
        "tick_secs": DAY_TICK_SECS,
        "cpu_seconds": round(cpu, 1),
        "wall_seconds": round(wall, 1),
        "command": format!(
            "shardline replay --csv {} --sessions {target} --tick-secs {DAY_TICK_SECS} --ticks {DAY_TICKS} --json",
            path.display()
        ),
    });
    if quick {
        out["note"] = json!(format!(
            "quick: {sessions} sessions measured, scaled ×{scale} to {target} (the cost grows about linearly with sessions)"
        ));
    }
    Ok(out)
}

fn traces_dir() -> PathBuf {
    std::env::var_os("SHARDLINE_TRACES").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/data/traces"
            ))
        },
        PathBuf::from,
    )
}

fn failed(what: String) -> BenchError {
    BenchError::Check(what)
}

/// Replays every shipped trace and the speed case: `{"traces": {name: {...}}, "speed": {...}}`.
pub fn run(quick: bool) -> Result<Value, BenchError> {
    let dir = traces_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| failed(format!("reading {}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(failed(format!("no *.csv trace in {}", dir.display())));
    }
    let read = |path: &PathBuf| -> Result<Series, BenchError> {
        let mut s = Series::read(path).map_err(|e| failed(e.to_string()))?;
        if quick {
            s.values.truncate(QUICK_ROWS);
        }
        Ok(s)
    };
    let mut traces = serde_json::Map::new();
    let mut met = 0;
    for path in &paths {
        let series = read(path)?;
        let outcome = replay::run(std::slice::from_ref(&series), &Options::default())
            .map_err(|e| failed(format!("{}: {e}", series.name)))?;
        let report = Report::of(&outcome);
        let missed = report.goal_missed();
        met += usize::from(missed.is_none());
        let mut entry = serde_json::to_value(&report).expect("reports serialise");
        entry["goal_met"] = json!(missed.is_none());
        entry["why_missed"] = json!(missed);
        traces.insert(series.name.clone(), entry);
    }
    // Speed: the first trace, many sessions.
    let series = read(&paths[0])?;
    let sessions = if quick {
        SPEED_SESSIONS.1
    } else {
        SPEED_SESSIONS.0
    };
    let options = Options {
        sessions: Some(sessions),
        ..Options::default()
    };
    let started = Instant::now();
    let outcome = replay::run(std::slice::from_ref(&series), &options)
        .map_err(|e| failed(format!("{}: {e}", series.name)))?;
    let secs = started.elapsed().as_secs_f64();
    let rate = (outcome.sessions * outcome.ticks) as f64 / secs;
    let day = day(
        &Series::read(&paths[0]).map_err(|e| failed(e.to_string()))?,
        &paths[0],
        quick,
    )?;
    Ok(json!({
        "rows": if quick { format!("first {QUICK_ROWS}") } else { "all".into() },
        "goal_met": met,
        "traces_replayed": paths.len(),
        "traces": traces,
        "speed": {
            "trace": series.name,
            "sessions": outcome.sessions,
            "ticks": outcome.ticks,
            "controllers": 4,
            "seconds": round(secs, 2),
            "session_ticks_per_sec": round(rate, 0),
            "projected_secs_100k_sessions_86400_ticks": round(TARGET_SESSION_TICKS / rate, 0),
            "day_5min_rows": day,
        },
    }))
}

/// The summary lines: one per trace, then the speed.
pub fn summary(results: &Value) -> String {
    let mut out = format!(
        "replay goal (predictive ≤ ½ reactive overload, ≤ 1.1 × its shard-s, ≤ 1.3 × oracle's): met on {} of {} traces ({} rows)\n",
        results["goal_met"], results["traces_replayed"], results["rows"].as_str().unwrap_or("?")
    );
    if let Some(traces) = results["traces"].as_object() {
        for (name, t) in traces {
            match t["why_missed"].as_str() {
                None => out += &format!("  {name}: met\n"),
                Some(why) => out += &format!("  {name}: missed: {why}\n"),
            }
        }
    }
    let s = &results["speed"];
    out += &format!(
        "replay speed: {} sessions × {} ticks × 4 controllers in {} s = {} session-ticks/s; 100k sessions × 86,400 ticks: {} s projected\n",
        s["sessions"], s["ticks"], s["seconds"], s["session_ticks_per_sec"],
        s["projected_secs_100k_sessions_86400_ticks"]
    );
    let d = &s["day_5min_rows"];
    if d.is_object() {
        out += &format!(
            "replay day: {} sessions × {} ticks of {} s × 4 controllers, one thread: {} s CPU, {} s wall{}\n",
            d["sessions"],
            d["ticks"],
            d["tick_secs"],
            d["cpu_seconds"],
            d["wall_seconds"],
            if d["note"].is_string() { " (quick: scaled from fewer sessions)" } else { "" }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quick run reports every shipped trace with its goal verdict and the speed figure.
    #[test]
    fn a_quick_run_reports_the_goal_per_trace_and_the_speed() {
        if !traces_dir().is_dir() {
            eprintln!("no traces at {}: skipped", traces_dir().display());
            return;
        }
        let results = run(true).expect("the shipped traces replay");
        let traces = results["traces"].as_object().expect("traces");
        assert_eq!(traces.len() as u64, results["traces_replayed"]);
        for (name, t) in traces {
            let met = t["goal_met"].as_bool().expect("goal_met");
            assert_eq!(met, t["why_missed"].is_null(), "{name}");
            assert!(t["controllers"]["oracle"]["shard_seconds"].as_f64() > Some(0.0));
        }
        let speed = &results["speed"];
        assert!(speed["session_ticks_per_sec"].as_f64() > Some(0.0));
        assert!(speed["projected_secs_100k_sessions_86400_ticks"].as_f64() > Some(0.0));
        let day = &speed["day_5min_rows"];
        assert_eq!(day["sessions"], 100_000);
        assert_eq!(day["ticks"], DAY_TICKS);
        assert!(day["cpu_seconds"].as_f64() > Some(0.0));
        assert!(day["note"].is_string(), "a quick run says it scaled");
        let summary = summary(&results);
        assert_eq!(summary.lines().count(), traces.len() + 3, "{summary}");
    }
}
