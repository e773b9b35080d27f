//! throughput.svg: median MB/s of every contender, grouped by input.
//!
//! Drawn with plotters' SVG backend only; text is written as SVG `<text>` elements (no font
//! files, no system libraries).

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::results::Results;

const WIDTH: u32 = 1400;
const HEIGHT: u32 = 650;
const LEGEND_WIDTH: u32 = 300;

/// One colour per contender, in table order: reds for s3-compressor end to end, blues for the
/// codecs alone, greens and purples for the CLI tools.
const COLOURS: [RGBColor; 11] = [
    RGBColor(178, 24, 43),
    RGBColor(214, 96, 77),
    RGBColor(244, 165, 130),
    RGBColor(33, 102, 172),
    RGBColor(67, 147, 195),
    RGBColor(146, 197, 222),
    RGBColor(27, 120, 55),
    RGBColor(90, 174, 97),
    RGBColor(166, 219, 160),
    RGBColor(118, 42, 131),
    RGBColor(194, 165, 207),
];

fn colour(index: usize) -> RGBColor {
    COLOURS.get(index).copied().unwrap_or_else(|| {
        let (r, g, b) = Palette99::pick(index).rgb();
        RGBColor(r, g, b)
    })
}

pub fn throughput(path: &Path, results: &Results) -> anyhow::Result<()> {
    // Every contender's name in first-seen order: one colour each, the same in every group.
    let mut names: Vec<&str> = Vec::new();
    for input in &results.inputs {
        for contender in &input.contenders {
            if !names.contains(&contender.name.as_str()) {
                names.push(&contender.name);
            }
        }
    }
    // (input index, contender index, median MB/s)
    let mut bars = Vec::new();
    for (i, input) in results.inputs.iter().enumerate() {
        for contender in &input.contenders {
            let Some(summary) = contender.summary() else {
                continue;
            };
            if let Some(j) = names.iter().position(|name| *name == contender.name) {
                if summary.mb_per_s.is_finite() && summary.mb_per_s > 0.0 {
                    bars.push((i, j, summary.mb_per_s));
                }
            }
        }
    }
    let max = bars.iter().map(|bar| bar.2).fold(1.0, f64::max);
    let min = bars.iter().map(|bar| bar.2).fold(max, f64::min);
    let (low, high) = (min / 2.0, max * 2.0);
    let groups = results.inputs.len().max(1);

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, legend) = root.split_horizontally(WIDTH - LEGEND_WIDTH);

    let mut chart = ChartBuilder::on(&plot)
        .caption(
            "s3-compressor: median throughput (MB/s of input, log scale)",
            ("sans-serif", 26),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..groups as f64, (low..high).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        // The groups are named below, under their centres.
        .x_labels(0)
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .y_desc("MB/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;

    let slots = names.len().max(1) as f64;
    let width = 0.84 / slots;
    chart.draw_series(bars.iter().map(|&(i, j, value)| {
        let x0 = i as f64 + 0.08 + j as f64 * width;
        Rectangle::new([(x0, low), (x0 + width * 0.9, value)], colour(j).filled())
    }))?;

    let label_style = ("sans-serif", 20)
        .into_font()
        .into_text_style(&root)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for (i, input) in results.inputs.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(i as f64 + 0.5, low));
        root.draw(&Text::new(
            input.name.clone(),
            (x, y + 10),
            label_style.clone(),
        ))?;
    }

    // The legend, beside the plot so it never covers a bar.
    for (j, name) in names.iter().enumerate() {
        let y = 60 + 26 * j as i32;
        legend.draw(&Rectangle::new([(10, y), (28, y + 16)], colour(j).filled()))?;
        legend.draw(&Text::new(
            name.to_string(),
            (36, y + 2),
            ("sans-serif", 18).into_font(),
        ))?;
    }
    root.present()?;
    Ok(())
}
