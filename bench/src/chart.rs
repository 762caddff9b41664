//! The `--chart` PNG: deliveries/s against subscriber count, ssehub and the baseline.
//!
//! Drawn with plotters' bitmap backend. Text needs a TrueType font: `SSEHUB_BENCH_FONT`, else
//! DejaVu Sans or Liberation Sans when installed; without one the chart is drawn without text
//! (the axes and the two lines: ssehub blue, baseline red) rather than failing.

use std::path::Path;

use plotters::prelude::*;

/// One line of the chart: `(subscribers, deliveries/s)` points.
pub type Series = Vec<(u32, f64)>;

fn load_font() -> bool {
    let candidates = [
        std::env::var("SSEHUB_BENCH_FONT").unwrap_or_default(),
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf".to_owned(),
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf".to_owned(),
    ];
    for path in candidates.iter().filter(|p| !p.is_empty()) {
        if let Ok(bytes) = std::fs::read(path) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Draw `ssehub` and `baseline` into a PNG at `path`.
pub fn draw(
    path: &Path,
    ssehub: &Series,
    baseline: &Series,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let text = load_font();
    let max_x = ssehub
        .iter()
        .chain(baseline)
        .map(|p| p.0)
        .max()
        .unwrap_or(1)
        .max(1);
    let max_y = ssehub
        .iter()
        .chain(baseline)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.15;
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if text {
        builder
            .caption(
                "deliveries/s vs subscribers (one channel, burst)",
                ("sans-serif", 22),
            )
            .x_label_area_size(45)
            .y_label_area_size(80);
    } else {
        builder.x_label_area_size(5).y_label_area_size(5);
    }
    let mut chart = builder
        .build_cartesian_2d(0u32..max_x + max_x / 20, 0f64..max_y)
        .map_err(|e| e.to_string())?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("subscribers")
            .y_desc("deliveries/s")
            .y_label_formatter(&|v| format!("{:.0}k", v / 1000.0));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    for (name, series, color) in [("ssehub", ssehub, BLUE), ("baseline", baseline, RED)] {
        let line = chart
            .draw_series(LineSeries::new(
                series.iter().copied(),
                color.stroke_width(3),
            ))
            .map_err(|e| e.to_string())?;
        if text {
            line.label(name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        }
        chart
            .draw_series(series.iter().map(|p| Circle::new(*p, 5, color.filled())))
            .map_err(|e| e.to_string())?;
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}
