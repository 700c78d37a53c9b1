//! `bench`'s PNG chart (plotters): nanoseconds per packet of each dataplane case, with the
//! 10 GbE 64-byte line-rate budget and the header-mode target (2 × `XDP_TX`) as lines.

use std::{fs, path::Path};

use anyhow::{anyhow, Context, Result};
use plotters::{
    coord::ranged1d::SegmentValue,
    prelude::*,
    style::{
        text_anchor::{HPos, Pos, VPos},
        FontStyle,
    },
};
use serde_json::Value;

/// The font the labels are drawn with (Debian's `fonts-dejavu-core`, installed by setup).
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Time per packet at 10 GbE line rate with 64-byte frames.
const LINE_RATE_NS: f64 = 67.2;

/// Draws the dataplane cases of `results` into the PNG at `path`.
pub fn dataplane_png(results: &Value, path: &Path) -> Result<()> {
    let font = fs::read(FONT).with_context(|| format!("reading {FONT} (fonts-dejavu-core)"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{FONT} is not a usable font"))?;
    let cases: Vec<(String, f64)> = results["dataplane"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| Some((c["case"].as_str()?.to_owned(), c["ns_per_pkt"].as_f64()?)))
        .collect();
    if cases.is_empty() {
        return Err(anyhow!("no dataplane cases in the results"));
    }
    let tx = cases
        .iter()
        .find(|(name, _)| name == "xdp_tx_baseline")
        .map(|(_, ns)| *ns)
        .unwrap_or(0.0);
    let top = cases.iter().map(|(_, ns)| *ns).fold(LINE_RATE_NS, f64::max) * 1.15;
    let n = cases.len();

    let root = BitMapBackend::new(path, (1100, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "shardline: ns per packet, BPF_PROG_TEST_RUN, 64-byte frames (lower is better)",
            ("sans-serif", 22),
        )
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((0..n - 1).into_segmented(), 0f64..top)?;
    let names: Vec<String> = cases.iter().map(|(name, _)| name.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_style(("sans-serif", 14))
        .y_desc("ns per packet")
        .draw()?;
    chart.draw_series(cases.iter().enumerate().map(|(i, (name, ns))| {
        let color = if name.ends_with("_baseline") {
            RGBColor(150, 150, 150)
        } else {
            RGBColor(40, 90, 170)
        };
        let mut bar = Rectangle::new(
            [
                (SegmentValue::Exact(i), 0.0),
                (SegmentValue::Exact(i + 1), *ns),
            ],
            color.filled(),
        );
        bar.set_margin(0, 0, 12, 12);
        bar
    }))?;
    let label =
        TextStyle::from(("sans-serif", 15).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(cases.iter().enumerate().map(|(i, (_, ns))| {
        Text::new(
            format!("{ns:.0} ns"),
            (SegmentValue::CenterOf(i), ns + top * 0.01),
            label.clone(),
        )
    }))?;
    let hline = |y: f64| [(SegmentValue::Exact(0), y), (SegmentValue::Exact(n), y)];
    chart
        .draw_series(LineSeries::new(hline(LINE_RATE_NS), RED.stroke_width(2)))?
        .label("10 GbE line rate, 64 B frames: 67.2 ns")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED.stroke_width(2)));
    if tx > 0.0 {
        chart
            .draw_series(LineSeries::new(hline(2.0 * tx), GREEN.stroke_width(2)))?
            .label(format!(
                "header-mode target: 2 × XDP_TX = {:.0} ns",
                2.0 * tx
            ))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREEN.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn draws_a_png_from_the_results() {
        let results = json!({ "dataplane": [
            { "case": "xdp_pass_baseline", "ns_per_pkt": 28.0 },
            { "case": "xdp_tx_baseline", "ns_per_pkt": 32.0 },
            { "case": "header_hit_v4", "ns_per_pkt": 280.0 },
        ]});
        let path = std::env::temp_dir().join(format!("xtask-chart-{}.png", std::process::id()));
        dataplane_png(&results, &path)
            .unwrap_or_else(|e| panic!("{e:#} (run `cargo xtask setup` for the font)"));
        let bytes = fs::read(&path).expect("the chart was written");
        if std::env::var_os("XTASK_KEEP_CHART").is_none() {
            let _ = fs::remove_file(&path);
        }
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
