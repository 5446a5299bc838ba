//! `onebit plot RUN`: loss (train and validation) and STE monitor curves of a run directory
//! drawn to an SVG file with plotters.

use anyhow::{bail, Context, Result};
use plotters::prelude::*;

/// Flags of `onebit plot`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run directory (holds metrics.jsonl and monitor.jsonl).
    pub run: String,
    /// Output SVG (default RUN/curves.svg).
    #[arg(short, long)]
    pub output: Option<String>,
}

type Series = Vec<(f64, f64)>;

fn read_jsonl(path: &str) -> Result<Vec<serde_json::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{path}:{}", i + 1)))
        .collect()
}

fn draw(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    series: &[(&str, Series, RGBColor)],
) -> Result<()> {
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Ok(());
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))?;
    chart.configure_mesh().x_desc("step").draw()?;
    for (name, s, color) in series {
        let c = *color;
        chart
            .draw_series(LineSeries::new(s.iter().copied(), c))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c));
    }
    chart.configure_series_labels().border_style(BLACK).background_style(WHITE).draw()?;
    Ok(())
}

/// Runs `onebit plot`.
pub fn run(a: Args) -> Result<()> {
    let metrics = read_jsonl(&format!("{}/metrics.jsonl", a.run))?;
    if metrics.is_empty() {
        bail!("{}/metrics.jsonl holds no steps", a.run);
    }
    let get = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_f64());
    let series = |k: &str| -> Series {
        metrics.iter().filter_map(|m| Some((get(m, "step")?, get(m, k)?))).collect()
    };
    let monitor = read_jsonl(&format!("{}/monitor.jsonl", a.run)).unwrap_or_default();
    let avg = |k: &str| -> Series {
        monitor
            .iter()
            .filter_map(|m| {
                let layers = m.get("layers")?.as_array()?;
                let n = layers.len().max(1) as f64;
                let s: f64 = layers.iter().filter_map(|l| get(l, k)).sum();
                Some((get(m, "step")?, 100.0 * s / n))
            })
            .collect()
    };
    let out = a.output.unwrap_or_else(|| format!("{}/curves.svg", a.run));
    // Drawn into memory, then written atomically like every other output.
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1000, 900)).into_drawing_area();
        root.fill(&WHITE)?;
        let parts = root.split_evenly((3, 1));
        draw(
            &parts[0],
            "loss",
            &[("train", series("loss"), BLUE), ("validation", series("val_loss"), RED)],
        )?;
        draw(&parts[1], "learning rate", &[("lr", series("lr"), BLACK)])?;
        draw(
            &parts[2],
            "STE monitors (mean over BitLinears, %)",
            &[
                ("zero share", avg("zero"), BLUE),
                ("flips since last report", avg("flips"), RED),
                ("saturated |W/γ|>1.5", avg("saturated"), GREEN),
            ],
        )?;
        root.present()?;
    }
    onebit_model::output::write_atomic(&out, svg.as_bytes())?;
    eprintln!("wrote {out}");
    Ok(())
}
