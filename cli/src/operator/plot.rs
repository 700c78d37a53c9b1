//! `shardline plot SESSION --out FILE.png`: a session's measured load, point forecast and
//! upper bound over time, with its re-shard events as vertical lines (plotters, bitmap).

use std::{path::Path, sync::OnceLock};

use plotters::{coord::types::RangedCoordf64, prelude::*, style::FontStyle};
use shardline::{api::views::SessionDetail, state::SessionRef};

use super::CliError;

/// The font labels are drawn with (Debian's `fonts-dejavu-core`, installed by setup).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn register_font() -> Result<(), CliError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let font = std::fs::read(FONT)
                .map_err(|e| format!("reading {FONT} (install fonts-dejavu-core): {e}"))?;
            plotters::style::register_font(
                "sans-serif",
                FontStyle::Normal,
                Box::leak(font.into_boxed_slice()),
            )
            .map_err(|_| format!("{FONT} is not a usable font"))
        })
        .clone()
        .map_err(CliError::Local)
}

/// The coordinates every chart here uses: seconds across, a value up.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws one chart into the PNG at `out` in the house layout: white, `caption` on top, seconds
/// (0 to `end`) across and `y_desc` (0 to `top`) up, the series `draw` adds, their legend in
/// the upper left.
fn chart_png(
    out: &Path,
    size: (u32, u32),
    caption: &str,
    end: f64,
    top: f64,
    y_desc: &str,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> Result<(), String>,
) -> Result<(), CliError> {
    let fail =
        |e: &dyn std::fmt::Display| CliError::Local(format!("drawing {}: {e}", out.display()));
    let root = BitMapBackend::new(out, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end, 0f64..top)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(y_desc)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| fail(&e))?;
    draw(&mut chart).map_err(|e| fail(&e))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// Draws `detail` (the API's `GET /v1/sessions/{service}/{session}`) into the PNG at `out`.
pub fn draw(session: &SessionRef, detail: &SessionDetail, out: &Path) -> Result<(), CliError> {
    // A sample with a number that is not finite (`null` in the API's JSON) cannot be drawn.
    let samples: Vec<[f64; 4]> = detail
        .history
        .iter()
        .map(|s| [s.at_ms as f64, s.actual, s.forecast, s.upper])
        .filter(|s| s.iter().all(|v| v.is_finite()))
        .collect();
    if samples.is_empty() {
        return Err(CliError::Refused {
            status: 404,
            code: "no_history".into(),
            message: format!(
                "session {session} has no samples yet: the control loop has not forecast it"
            ),
        });
    }
    register_font()?;
    let t0 = samples[0][0];
    let secs = |ms: f64| (ms - t0) / 1000.0;
    let end = secs(samples[samples.len() - 1][0]).max(1.0);
    let top = samples
        .iter()
        .flat_map(|s| s[1..].iter().copied())
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max)
        * 1.1;
    let events: Vec<(f64, String)> = detail
        .events
        .iter()
        .map(|e| (secs(e.at_ms as f64), format!("{}→{}", e.from, e.to)))
        .filter(|(t, _)| (0.0..=end).contains(t))
        .collect();
    let caption = format!("shardline: session {session}, load and forecast");
    chart_png(
        out,
        (1100, 550),
        &caption,
        end,
        top,
        "packets per second",
        |chart| {
            let series = [
                (1, "actual", BLUE),
                (2, "forecast", RGBColor(230, 120, 0)),
                (3, "upper bound (p95)", RGBColor(200, 0, 0)),
            ];
            for (column, name, color) in series {
                let points = samples.iter().map(|s| (secs(s[0]), s[column]));
                chart
                    .draw_series(LineSeries::new(
                        points,
                        color.stroke_width(if column == 1 { 2 } else { 1 }),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
            }
            let grey = RGBColor(90, 90, 90);
            for (t, label) in &events {
                chart
                    .draw_series(LineSeries::new(vec![(*t, 0.0), (*t, top)], grey.mix(0.6)))
                    .map_err(|e| e.to_string())?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        label.clone(),
                        (*t, top * 0.97),
                        ("sans-serif", 13),
                    )))
                    .map_err(|e| e.to_string())?;
            }
            if !events.is_empty() {
                chart
                    .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())
                    .map_err(|e| e.to_string())?
                    .label("re-shard (shards before→after)")
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey));
            }
            Ok(())
        },
    )
}

/// Draws a replay's demand against the capacity each controller held into the PNG at `out`,
/// with each controller's overloaded ticks marked along the bottom.
pub fn replay(
    out: &Path,
    trace: &str,
    tick_secs: f64,
    timeline: &shardline::replay::Timeline,
) -> Result<(), CliError> {
    register_font()?;
    let ticks = timeline.demand.len();
    let end = (ticks as f64 * tick_secs).max(1.0);
    let top = timeline
        .capacity
        .iter()
        .flatten()
        .chain(&timeline.demand)
        .copied()
        .fold(1.0, f64::max)
        * 1.1;
    let caption = format!("shardline replay: {trace}, demand and capacity held");
    chart_png(
        out,
        (1200, 600),
        &caption,
        end,
        top,
        "demand / capacity",
        |chart| {
            let at = |t: usize| t as f64 * tick_secs;
            chart
                .draw_series(LineSeries::new(
                    timeline.demand.iter().enumerate().map(|(t, d)| (at(t), *d)),
                    BLACK.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label("demand")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
            let colors = [
                RGBColor(0, 90, 200),
                RGBColor(200, 0, 0),
                RGBColor(120, 120, 120),
                RGBColor(0, 150, 60),
            ];
            for (k, kind) in shardline::replay::Kind::ALL.iter().enumerate() {
                let color = colors[k];
                let Some(held) = timeline.capacity.get(k) else {
                    continue;
                };
                chart
                    .draw_series(LineSeries::new(
                        held.iter().enumerate().map(|(t, c)| (at(t), *c)),
                        color.stroke_width(1),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(format!("{} capacity (overloads marked below)", kind.name()))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
                let row = top * (0.01 + 0.015 * k as f64);
                let marks = timeline.overloaded.get(k).into_iter().flatten().enumerate();
                chart
                    .draw_series(
                        marks
                            .filter(|(_, over)| **over)
                            .map(|(t, _)| Circle::new((at(t), row), 2, color.filled())),
                    )
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline::api::views::{ReshardEvent, Sample};

    #[test]
    fn draws_history_and_events_into_a_png() {
        let history: Vec<Sample> = (0..120)
            .map(|i| {
                let load = 500.0 + 400.0 * ((i as f64) / 10.0).sin();
                Sample {
                    at_ms: 1_000_000 + i * 1000,
                    actual: load,
                    forecast: load * 1.05,
                    upper: load * 1.3,
                }
            })
            .collect();
        let detail = SessionDetail {
            history,
            events: vec![ReshardEvent {
                at_ms: 1_030_000,
                from: 1,
                to: 2,
                reason: "peak".into(),
            }],
            ..SessionDetail::default()
        };
        let out = std::env::temp_dir().join(format!("shardline-plot-{}.png", std::process::id()));
        let session = SessionRef {
            service: "kv".into(),
            session: 42,
        };
        draw(&session, &detail, &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        assert!(
            bytes.len() > 10_000,
            "suspiciously small: {} bytes",
            bytes.len()
        );
        std::fs::remove_file(&out).unwrap();
        let empty = draw(&session, &SessionDetail::default(), &out).unwrap_err();
        assert_eq!(empty.exit_code(), super::super::EXIT_REFUSED);
    }
}
