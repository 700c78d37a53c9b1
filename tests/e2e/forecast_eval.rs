//! `forecast-eval` over the shipped real traces: the selected forecast (what the daemon
//! decides with) must beat the naive one on both sMAPE and MASE, for every file at horizons
//! 1, 3 and 12; and the CLI prints one JSON object or fails naming the problem.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use shardline::control::forecast::eval::{evaluate_file, PeriodChoice};

const HORIZONS: [usize; 3] = [1, 3, 12];

fn traces() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/traces");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
        panic!(
            "the trace folder {} is missing ({e}): the forecast evaluation needs the shared \
             traces beside the repository",
            dir.display()
        )
    });
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("listing the traces").path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .csv file in {}", dir.display());
    files
}

#[test]
fn selected_beats_naive_on_every_trace_and_horizon() {
    let mut failures = Vec::new();
    for file in traces() {
        for h in HORIZONS {
            let r = evaluate_file(&file, "value", h, PeriodChoice::Auto)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let (naive, selected) = (r.models.naive, r.models.selected);
            let mase = |s: shardline::control::forecast::eval::Scores| s.mase.unwrap_or(0.0);
            println!(
                "{:<36} h={h:<2} period={:<4} sMAPE {:>7.3} vs {:>7.3}  MASE {:>6.3} vs {:>6.3}  \
                 coverage {:.3} vs {:.3}",
                file.file_name().unwrap().to_string_lossy(),
                r.period,
                selected.smape,
                naive.smape,
                mase(selected),
                mase(naive),
                selected.coverage,
                naive.coverage,
            );
            if selected.smape >= naive.smape || mase(selected) >= mase(naive) {
                failures.push(format!("{} h={h}: {:?}", file.display(), r.models));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "selected did not beat naive:\n{}",
        failures.join("\n")
    );
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(crate::support::shardline_bin())
        .arg("forecast-eval")
        .args(args)
        .output()
        .expect("running shardline forecast-eval")
}

#[test]
fn cli_prints_one_json_object() {
    let file = &traces()[0];
    let out = cli(&["--csv", file.to_str().unwrap(), "--horizon", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["horizon"], 3);
    assert!(v["points"].as_u64().unwrap() > 1000);
    for model in [
        "naive",
        "seasonal_naive",
        "ewma",
        "holt",
        "holt_winters",
        "median",
        "seasonal_step",
        "drift",
        "selected",
    ] {
        for metric in ["smape", "mase", "coverage"] {
            assert!(
                v["models"][model][metric].is_number(),
                "{model}.{metric}: {v}"
            );
        }
    }
}

#[test]
fn cli_names_the_problem() {
    let dir = std::env::temp_dir().join(format!("shardline-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let short = dir.join("short.csv");
    std::fs::write(&short, "timestamp,value\n1,2\n2,3\n").unwrap();
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "timestamp,value\n1,2\n2,oops\n").unwrap();
    let cases = [
        (
            vec!["--csv", "/nonexistent/x.csv"],
            "cannot read /nonexistent/x.csv",
        ),
        (
            vec!["--csv", short.to_str().unwrap(), "--column", "load"],
            "no column \"load\"",
        ),
        (vec!["--csv", short.to_str().unwrap()], "has 2 values"),
        (vec!["--csv", bad.to_str().unwrap()], "line 3"),
        (
            vec!["--csv", short.to_str().unwrap(), "--period", "daily"],
            "expected a number of steps or auto",
        ),
    ];
    for (args, expected) in cases {
        let out = cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
