//! The learning curve: episode return against environment steps and against
//! wall-clock time, drawn from a run's `metrics.jsonl` into a PNG.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::register_font;

/// One point of the curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub env_steps: f64,
    pub wall_seconds: f64,
    pub mean_return: f64,
}

/// Errors drawing a curve.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} has no update with a finished episode yet")]
    Empty(String),
    #[error("drawing: {0}")]
    Draw(String),
}

/// Reads the points of a metrics log (lines without a mean return are skipped;
/// malformed lines, e.g. a torn last line, too).
pub fn read_points(metrics: &Path) -> Result<Vec<Point>, PlotError> {
    let text = std::fs::read_to_string(metrics).map_err(|source| PlotError::Read {
        path: metrics.display().to_string(),
        source,
    })?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            Some(Point {
                env_steps: v.get("env_steps")?.as_f64()?,
                wall_seconds: v.get("wall_seconds")?.as_f64()?,
                mean_return: v.get("episode_return_mean")?.as_f64()?,
            })
        })
        .collect())
}

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Embedded DejaVu Sans: no system fonts needed.
        let _ = register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Which coordinate of a point goes on the x axis.
type XOf = fn(&Point) -> f64;

/// Draws `points` into a 1200×450 PNG with two panels.
pub fn draw(points: &[Point], title: &str, out: &Path) -> Result<(), PlotError> {
    draw_many(&[(String::new(), vec![points.to_vec()])], title, out)
}

/// Line colors of [`draw_many`]'s labels, in order.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws several labelled groups of runs (e.g. one label per algorithm, one
/// run per seed) into a 1200×450 PNG with two panels, return vs env steps and
/// vs wall-clock; runs of one label share a color, and a legend names the
/// labels (an empty label draws no legend).
pub fn draw_many(
    groups: &[(String, Vec<Vec<Point>>)],
    title: &str,
    out: &Path,
) -> Result<(), PlotError> {
    let all = || groups.iter().flat_map(|(_, runs)| runs.iter().flatten());
    if all().next().is_none() {
        return Err(PlotError::Empty(title.to_owned()));
    }
    fonts();
    let err = |e: &dyn std::fmt::Display| PlotError::Draw(e.to_string());
    let root = BitMapBackend::new(out, (1200, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(600);
    let (lo, hi) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.mean_return), hi.max(p.mean_return))
    });
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let y = (lo - pad)..(hi + pad);
    let steps: XOf = |p| p.env_steps;
    let seconds: XOf = |p| p.wall_seconds;
    for (area, label, x_of) in [
        (&left, "environment steps", steps),
        (&right, "wall-clock seconds", seconds),
    ] {
        let x_max = all().map(x_of).fold(0.0, f64::max).max(1e-9);
        let mut chart = ChartBuilder::on(area)
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..x_max, y.clone())
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(label)
            .x_labels(6)
            .x_label_formatter(&|v| compact(*v))
            .y_desc("mean return (last 100 episodes)")
            .label_style(("sans-serif", 14))
            .draw()
            .map_err(|e| err(&e))?;
        for (i, (name, runs)) in groups.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            for (k, points) in runs.iter().enumerate() {
                let series = chart
                    .draw_series(LineSeries::new(
                        points.iter().map(|p| (x_of(p), p.mean_return)),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| err(&e))?;
                if k == 0 && !name.is_empty() {
                    series.label(name.as_str()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                    });
                }
            }
        }
        if groups.iter().any(|(name, _)| !name.is_empty()) {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .draw()
                .map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A short axis label: 350000 → "350k", 1500000 → "1.5M", 2.5 → "2.5".
fn compact(v: f64) -> String {
    let short = |x: f64| {
        let s = format!("{x:.1}");
        s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
    };
    match v.abs() {
        a if a >= 1e6 => format!("{}M", short(v / 1e6)),
        a if a >= 1e3 => format!("{}k", short(v / 1e3)),
        _ => short(v),
    }
}

/// Draws `<run_dir>/learning_curve.png` from `<run_dir>/metrics.jsonl`.
pub fn plot_run(run_dir: &Path, title: &str) -> Result<std::path::PathBuf, PlotError> {
    let points = read_points(&run_dir.join("metrics.jsonl"))?;
    let out = run_dir.join("learning_curve.png");
    draw(&points, title, &out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_common::testing::TempDir;

    #[test]
    fn draws_a_png_from_a_metrics_log_skipping_bad_lines() {
        let tmp = TempDir::new("plot");
        let dir = tmp.path();
        let mut log = String::new();
        for i in 0..50 {
            log.push_str(&format!(
                "{{\"env_steps\": {}, \"wall_seconds\": {}, \"episode_return_mean\": {}}}\n",
                i * 1000,
                i as f64 * 0.1,
                (i * 10) as f64
            ));
        }
        log.push_str(
            "{\"env_steps\": 1, \"wall_seconds\": 1, \"episode_return_mean\": null}\n{\"torn",
        );
        std::fs::write(dir.join("metrics.jsonl"), log).unwrap();
        assert_eq!(read_points(&dir.join("metrics.jsonl")).unwrap().len(), 50);
        let png = plot_run(dir, "test").unwrap();
        // The curve is drawn, in the first color, and it rises: its pixels
        // at the right edge sit higher (smaller y) than at the left.
        let (lo, hi) = curve_ends(&png, PALETTE[0]);
        assert!(hi < lo - 100.0, "a rising curve: left y {lo}, right y {hi}");
    }

    /// Median y of the pixels of `color` in the leftmost and rightmost
    /// tenth of their horizontal extent (the median: a legend swatch of the
    /// same color may sit in a band).
    fn curve_ends(png: &Path, color: RGBColor) -> (f64, f64) {
        let img = image::open(png).unwrap().to_rgb8();
        let RGBColor(r, g, b) = color;
        let px: Vec<(u32, u32)> = img
            .enumerate_pixels()
            .filter(|(_, _, p)| p.0 == [r, g, b])
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(px.len() > 200, "{} pixels of {color:?}", px.len());
        let (x0, x1) = (
            px.iter().map(|p| p.0).min().unwrap(),
            px.iter().map(|p| p.0).max().unwrap(),
        );
        let band = (x1 - x0) / 10;
        let median_y = |keep: &dyn Fn(u32) -> bool| {
            let mut ys: Vec<u32> = px.iter().filter(|p| keep(p.0)).map(|p| p.1).collect();
            ys.sort_unstable();
            ys[ys.len() / 2] as f64
        };
        (median_y(&|x| x <= x0 + band), median_y(&|x| x >= x1 - band))
    }

    #[test]
    fn compare_draws_each_label_in_its_color() {
        let tmp = TempDir::new("plot-many");
        let rising: Vec<Point> = (0..40)
            .map(|i| Point {
                env_steps: i as f64 * 1000.0,
                wall_seconds: i as f64,
                mean_return: i as f64 * 10.0,
            })
            .collect();
        let falling: Vec<Point> = rising
            .iter()
            .map(|p| Point {
                mean_return: 400.0 - p.mean_return,
                ..*p
            })
            .collect();
        let out = tmp.join("cmp.png");
        let groups = vec![
            ("up".to_owned(), vec![rising]),
            ("down".to_owned(), vec![falling]),
        ];
        draw_many(&groups, "cmp", &out).unwrap();
        let (lo, hi) = curve_ends(&out, PALETTE[0]);
        assert!(hi < lo, "first label rises: {lo} -> {hi}");
        let (lo, hi) = curve_ends(&out, PALETTE[1]);
        assert!(hi > lo, "second label falls: {lo} -> {hi}");
    }

    #[test]
    fn axis_labels_are_compact() {
        assert_eq!(compact(350_000.0), "350k");
        assert_eq!(compact(1_500_000.0), "1.5M");
        assert_eq!(compact(2_000_000.0), "2M");
        assert_eq!(compact(2.5), "2.5");
        assert_eq!(compact(0.0), "0");
        assert_eq!(compact(12_345.0), "12.3k");
    }

    #[test]
    fn an_empty_log_is_an_error() {
        let dir = TempDir::new("plot-empty");
        std::fs::write(dir.join("metrics.jsonl"), "").unwrap();
        assert!(matches!(
            plot_run(dir.path(), "x"),
            Err(PlotError::Empty(_))
        ));
    }
}
