//! Development-only: `forecast-eval` over every CSV in `$SHARDLINE_EVAL_DIR` at horizons 1, 3
//! and 12, one line per file and horizon (selected against naive). An example, not a test: it
//! needs a folder of series the repository does not ship.
//!
//! ```sh
//! SHARDLINE_EVAL_DIR=/path/to/csvs cargo run --release -p shardline-forecast --example dev_eval
//! ```

use std::path::PathBuf;

use shardline_forecast::eval::{evaluate_file, PeriodChoice};

fn main() {
    let dir = std::env::var("SHARDLINE_EVAL_DIR")
        .expect("set SHARDLINE_EVAL_DIR to a folder of timestamp,value CSV files");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("reading SHARDLINE_EVAL_DIR")
        .map(|e| e.expect("listing").path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    println!("file h period sel_smape naive_smape ratio sel_mase naive_mase sel_cov");
    for file in files {
        for h in [1, 3, 12] {
            let Ok(r) = evaluate_file(&file, "value", h, PeriodChoice::Auto) else {
                continue;
            };
            let (n, s) = (r.models.naive, r.models.selected);
            println!(
                "{} {h} {} {:.3} {:.3} {:.3} {:.3} {:.3} {:.3}",
                file.file_stem().unwrap().to_string_lossy(),
                r.period,
                s.smape,
                n.smape,
                s.smape / n.smape.max(1e-12),
                s.mase.unwrap_or(f64::NAN),
                n.mase.unwrap_or(f64::NAN),
                s.coverage,
            );
        }
    }
}
