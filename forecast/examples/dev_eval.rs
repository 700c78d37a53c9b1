//! Development-only: `forecast-eval` over every CSV in `$SHARDLINE_EVAL_DIR` at horizons 1, 3
//! and 12, one line per file and horizon (selected against naive). An example, not a test: it
//! needs a folder of series the repository does not ship.
//!
//! Besides `forecast-eval`'s scores each line has the selector's coverage of the lead window's
//! peak (`max(y[t+1..=t+h])` at or under the bound published at t, what sizing needs) and the
//! bound's mean width over the forecast in units of the series' one-step naive MAE (MASE's
//! scale), so a bound's coverage can be read against its cost.
//!
//! The last lines count issue 20 §2's bars per horizon: cases with sMAPE above 1.05 × naive's,
//! sMAPE at most 0.95 × naive's, MASE under 1, coverage under 90 %; and the geometric means of
//! the selection's MASE and sMAPE over naive's, which move before a count does.
//!
//! `SHARDLINE_EVAL_FOLD=A` (or `B`) keeps the odd (or even) positions of the sorted file names
//! only: develop on one fold, confirm on the other (docs/predict.md, sixth round).
//!
//! ```sh
//! SHARDLINE_EVAL_DIR=/path/to/csvs cargo run --release -p shardline-forecast --example dev_eval
//! ```

use std::path::PathBuf;

use shardline_forecast::{
    eval::{evaluate, read_csv, refit_due, PeriodChoice, REFIT_HISTORY},
    Selector, SelectorConfig,
};

fn main() {
    let dir = std::env::var("SHARDLINE_EVAL_DIR")
        .expect("set SHARDLINE_EVAL_DIR to a folder of timestamp,value CSV files");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("reading SHARDLINE_EVAL_DIR")
        .map(|e| e.expect("listing").path())
        .filter(|p| p.extension().is_some_and(|x| x == "csv"))
        .collect();
    files.sort();
    let fold = std::env::var("SHARDLINE_EVAL_FOLD").ok();
    let keep = match fold.as_deref() {
        None | Some("") => None,
        Some("A" | "a") => Some(0),
        Some("B" | "b") => Some(1),
        Some(other) => panic!("SHARDLINE_EVAL_FOLD is {other:?}: expected A, B or unset"),
    };
    let files: Vec<PathBuf> = files
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep.is_none_or(|k| i % 2 == k))
        .map(|(_, f)| f)
        .collect();
    let mut bars = [Bars::default(); 3];
    println!(
        "file h period sel_smape naive_smape ratio sel_mase naive_mase sel_cov window_cov width"
    );
    for file in files {
        let Ok(series) = read_csv(&file, "value") else {
            continue;
        };
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        for (h, bar) in [1, 3, 12].into_iter().zip(&mut bars) {
            let Ok(r) = evaluate(&name, &series, h, PeriodChoice::Auto) else {
                continue;
            };
            let (n, s) = (r.models.naive, r.models.selected);
            bar.add(
                s.smape / n.smape.max(1e-12),
                s.mase,
                s.mase.zip(n.mase).map(|(s, n)| s / n),
                s.coverage,
            );
            let (window_cov, width) = window_coverage(&series, h, r.period);
            println!(
                "{name} {h} {} {:.3} {:.3} {:.3} {:.3} {:.3} {:.3} {window_cov:.3} {width:.3}",
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
    for (h, b) in [1, 3, 12].into_iter().zip(bars) {
        println!(
            "# h={h}: {} cases; sMAPE > 1.05 x naive: {} (worst {:.3}); <= 0.95 x: {}; \
             MASE < 1: {}; coverage < 90 %: {}; geometric mean over naive's: MASE {:.4}, \
             sMAPE {:.4}",
            b.cases,
            b.above_105,
            b.worst_ratio,
            b.at_most_095,
            b.mase_under_1,
            b.coverage_under_90,
            b.mase_geomean(),
            b.smape_geomean(),
        );
    }
}

/// Issue 20 §2's bars at one horizon, counted over the files.
#[derive(Debug, Clone, Copy, Default)]
struct Bars {
    cases: usize,
    above_105: usize,
    at_most_095: usize,
    mase_under_1: usize,
    coverage_under_90: usize,
    worst_ratio: f64,
    /// Sums of the logarithms of the sMAPE and MASE ratios, and how many MASE ratios there are
    /// (a constant series has none).
    log_smape: f64,
    log_mase: f64,
    mase_ratios: usize,
}

impl Bars {
    fn add(&mut self, ratio: f64, mase: Option<f64>, mase_ratio: Option<f64>, coverage: f64) {
        self.cases += 1;
        self.log_smape += ratio.max(1e-12).ln();
        if let Some(r) = mase_ratio.filter(|r| *r > 0.0 && r.is_finite()) {
            self.log_mase += r.ln();
            self.mase_ratios += 1;
        }
        self.above_105 += usize::from(ratio > 1.05);
        self.at_most_095 += usize::from(ratio <= 0.95);
        self.mase_under_1 += usize::from(mase.is_some_and(|m| m < 1.0));
        self.coverage_under_90 += usize::from(coverage < 0.9);
        self.worst_ratio = self.worst_ratio.max(ratio);
    }

    fn smape_geomean(&self) -> f64 {
        (self.log_smape / self.cases.max(1) as f64).exp()
    }

    fn mase_geomean(&self) -> f64 {
        (self.log_mase / self.mase_ratios.max(1) as f64).exp()
    }
}

/// The share of lead windows whose peak is at or under the bound published before them, and
/// the bound's mean width over the forecast divided by the one-step naive MAE.
fn window_coverage(series: &[f64], h: usize, period: usize) -> (f64, f64) {
    let mut selector = Selector::new(SelectorConfig {
        horizon: h,
        period,
        ..SelectorConfig::default()
    });
    let (mut covered, mut width, mut windows) = (0usize, 0.0, 0usize);
    for (t, &v) in series.iter().enumerate() {
        if refit_due(t) {
            selector.fit(&series[t.saturating_sub(REFIT_HISTORY)..t]);
        }
        selector.update(v);
        if t + h < series.len() {
            let peak = series[t + 1..=t + h]
                .iter()
                .copied()
                .fold(f64::MIN, f64::max);
            covered += usize::from(peak <= selector.upper());
            width += selector.upper() - selector.forecast();
            windows += 1;
        }
    }
    let scale =
        series.windows(2).map(|w| (w[1] - w[0]).abs()).sum::<f64>() / (series.len() - 1) as f64;
    let windows = windows.max(1) as f64;
    (covered as f64 / windows, width / windows / scale.max(1e-12))
}
