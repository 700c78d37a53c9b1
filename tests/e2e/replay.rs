//! `shardline replay` on the shipped real traces: the daemon's own loop against a reactive
//! (HPA) controller, a static one and an oracle, through the CLI as a user runs it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use shardline::replay::report::Report;

fn trace(name: &str) -> PathBuf {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/traces")
        .join(name);
    assert!(
        file.is_file(),
        "{} is missing: the replay test needs the shared traces beside the repository",
        file.display()
    );
    file
}

fn replay(args: &[&str]) -> std::process::Output {
    Command::new(crate::support::shardline_bin())
        .arg("replay")
        .args(args)
        .output()
        .expect("running shardline replay")
}

fn report(args: &[&str]) -> Report {
    let out = replay(args);
    assert!(
        out.status.success(),
        "shardline replay {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    // The report type refuses unknown fields: the JSON has exactly the documented shape.
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn on_the_taxi_trace_prediction_overloads_less_than_reaction() {
    let file = trace("nyc_taxi.csv");
    let r = report(&["--csv", file.to_str().unwrap(), "--json"]);
    println!("{}", r.table());
    assert_eq!(r.trace, "nyc_taxi");
    assert_eq!(r.ticks, 10_320);
    let c = &r.controllers;
    assert!(
        c.predictive.overload_seconds < c.reactive.overload_seconds,
        "predictive overloads {} s, reactive {} s\n{}",
        c.predictive.overload_seconds,
        c.reactive.overload_seconds,
        r.table()
    );
    // The baselines bound the comparison: static never overloads and costs the most of the
    // two baselines; the oracle costs the least of all.
    assert_eq!(c.fixed.overload_seconds, 0.0, "{}", r.table());
    assert_eq!(c.oracle.overload_seconds, 0.0, "{}", r.table());
    for s in [&c.predictive, &c.reactive, &c.fixed] {
        assert!(c.oracle.shard_seconds <= s.shard_seconds, "{}", r.table());
    }
    // Minimal disruption: a re-shard moves a fraction of the keys, not all of them.
    assert!(c.predictive.reshards > 0);
    assert!(
        c.predictive.keys_moved_fraction < 0.5,
        "{}",
        c.predictive.keys_moved_fraction
    );
}

#[test]
fn many_sessions_replay_with_seeded_phases_and_a_plot() {
    let file = trace("elb_request_count_8c0756.csv");
    let path = file.to_str().unwrap();
    let args = ["--csv", path, "--sessions", "20", "--seed", "7", "--json"];
    let a = report(&args);
    assert_eq!(a, report(&args), "a replay is deterministic");
    let b = report(&["--csv", path, "--sessions", "20", "--seed", "8", "--json"]);
    assert_ne!(a, b, "the seed moves the phases");
    let png = std::env::temp_dir().join(format!("shardline-replay-{}.png", std::process::id()));
    let out = replay(&["--csv", path, "--plot", png.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    for name in ["predictive", "reactive", "static", "oracle", "goal"] {
        assert!(table.contains(name), "{table}");
    }
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::remove_file(&png).unwrap();
}

#[test]
fn bad_input_is_refused_naming_the_problem() {
    let file = trace("nyc_taxi.csv");
    let path = file.to_str().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--csv", "/nonexistent/x.csv"], "/nonexistent/x.csv"),
        (&["--csv", path, "--peak-shards", "0"], "--peak-shards"),
        (&["--csv", path, "--tick-secs=0"], "--tick-secs"),
        (&["--csv", path, "--backends", "5000"], "--backends"),
    ];
    for (args, expected) in cases {
        let out = replay(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// `--config` takes a file holding the `[control]` section alone, and the loop runs with it:
/// a scale-in delay of 300 s instead of 60 changes the loop's column (and only that one). A file
/// without the section (misspelt) is refused, and says so.
#[test]
fn a_control_section_alone_configures_the_loop_and_a_missing_one_is_refused() {
    let file = trace("ec2_cpu_utilization_24ae8d.csv");
    let file = file.to_str().unwrap();
    let dir = std::env::temp_dir().join(crate::support::unique_tag("shardline-replay-config-"));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };

    let defaults = report(&["--csv", file, "--json"]);
    let slow = write("slow.toml", "[control]\nscale_in_delay_secs = 300.0\n");
    let r = report(&["--csv", file, "--json", "--config", &slow]);
    assert_ne!(
        r.controllers.predictive,
        defaults.controllers.predictive,
        "the section was not used\n{}",
        r.table()
    );
    assert!(
        r.controllers.predictive.shard_seconds > defaults.controllers.predictive.shard_seconds,
        "a longer scale-in delay holds more shards\n{}\n{}",
        defaults.table(),
        r.table()
    );
    // The HPA rule and the oracle have brakes of their own (or none).
    assert_eq!(r.controllers.reactive, defaults.controllers.reactive);
    assert_eq!(r.controllers.oracle, defaults.controllers.oracle);

    let misspelt = write("misspelt.toml", "[contrl]\nscale_in_delay_secs = 300.0\n");
    let out = replay(&["--csv", file, "--json", "--config", &misspelt]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a file without [control] ran");
    assert!(stderr.contains("no [control] section"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
