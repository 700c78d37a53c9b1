//! `shardline forecast-eval`.

use std::path::PathBuf;

use clap::Args;
use shardline::control::forecast::eval::{evaluate_file, PeriodChoice};

/// Replay a CSV series through every forecaster online and print their scores as JSON.
#[derive(Args)]
pub struct ForecastEvalArgs {
    /// The CSV file (header line, one row per step).
    #[arg(long)]
    csv: PathBuf,
    /// The column holding the values.
    #[arg(long, default_value = "value")]
    column: String,
    /// Steps ahead to forecast.
    #[arg(long, default_value_t = 1)]
    horizon: usize,
    /// Season length in steps, or `auto` to detect it (0: none).
    #[arg(long, default_value = "auto", value_parser = parse_period)]
    period: PeriodChoice,
}

fn parse_period(s: &str) -> Result<PeriodChoice, String> {
    match s {
        "auto" => Ok(PeriodChoice::Auto),
        _ => s
            .parse()
            .map(PeriodChoice::Fixed)
            .map_err(|_| format!("{s:?}: expected a number of steps or auto")),
    }
}

/// Prints the evaluation report as one JSON line.
pub fn run(a: ForecastEvalArgs) -> anyhow::Result<()> {
    let report = evaluate_file(&a.csv, &a.column, a.horizon, a.period)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
