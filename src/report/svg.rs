//! Charts as inline SVG, drawn from the data. Hand-written rather than a chart library or a
//! vendored script: the report needs a few line charts, vertical markers, a log-scaled
//! percentile axis and bars; SVG renders and prints without any script and keeps the report one
//! self-contained file. The markup comes from maud like the pages around it, so every label is
//! escaped on the way in; the charts return it as a `String` the pages embed as is.

use maud::html;

/// Colours that stay apart on screen and in grey print.
pub const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

pub struct Series {
    pub name: String,
    pub color: String,
    pub points: Vec<(f64, f64)>,
}

/// How the x axis maps values.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum XScale {
    Linear,
    /// x is a quantile in 0..1, spread as log10(1 / (1 - q)): 90 %, 99 %, 99.9 % equally apart.
    Percentile,
}

pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Vertical lines: (x, label).
    pub markers: Vec<(f64, String)>,
    pub x_scale: XScale,
    pub width: u32,
    pub height: u32,
}

/// A round step for about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm < 1.5 {
        1.0
    } else if norm < 3.0 {
        2.0
    } else if norm < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v.abs() >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A coordinate to a tenth of a pixel: finer is invisible and only makes the file bigger.
fn coord(v: f64) -> String {
    format!("{v:.1}")
}

/// Quantile to its position on a percentile axis.
pub fn percentile_x(q: f64) -> f64 {
    let q = q.clamp(0.0, 0.999_999);
    (1.0 / (1.0 - q)).log10()
}

pub fn line_chart(c: &Chart) -> String {
    let (w, h) = (f64::from(c.width), f64::from(c.height));
    // More than one series: a legend row under the title, above the plot.
    let top = if c.series.len() > 1 { 46.0 } else { 30.0 };
    let (left, right, bottom) = (64.0, 16.0, 42.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let xs = |x: f64| match c.x_scale {
        XScale::Linear => x,
        XScale::Percentile => percentile_x(x),
    };
    let all: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|&(x, y)| (xs(x), y)))
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    let (mut x0, mut x1) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if c.x_scale == XScale::Percentile {
        (x0, x1) = (0.0, (x1 - 1e-6).max(3.0).ceil());
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y_max = all.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let y_step = nice_step(y_max.max(1e-9), 4.0);
    let y1 = ((y_max / y_step).ceil() * y_step).max(y_step);
    let px = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| top + ph - (y / y1) * ph;
    let (plot_bottom, plot_right) = (top + ph, left + pw);

    let y_ticks =
        std::iter::successors(Some(0.0), |y| Some(y + y_step)).take_while(|y| *y <= y1 + 1e-9);
    let x_ticks: Vec<(f64, String)> = match c.x_scale {
        XScale::Linear => {
            let step = nice_step(x1 - x0, 6.0);
            std::iter::successors(Some((x0 / step).ceil() * step), |x| Some(x + step))
                .take_while(|x| *x <= x1 + 1e-9)
                .map(|x| (x, fmt_tick(x)))
                .collect()
        }
        // One axis unit per nine: 90 %, 99 %, 99.9 %, ...
        XScale::Percentile => ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
            .iter()
            .enumerate()
            .map(|(k, label)| (k as f64, label.to_string()))
            .take_while(|(x, _)| *x <= x1 + 1e-9)
            .collect(),
    };
    let (tick_y1, tick_y2, tick_class) = match c.x_scale {
        XScale::Linear => (plot_bottom, plot_bottom + 4.0, "axis"),
        XScale::Percentile => (top, plot_bottom, "grid"),
    };
    // A point whose y is not a number is a gap: the line stops there and starts again after
    // it, so a figure that was not measured in a stretch is not drawn across it.
    let polylines = c.series.iter().flat_map(|s| {
        s.points
            .split(|p| !p.1.is_finite())
            .filter_map(|run| {
                let pts: Vec<String> = run
                    .iter()
                    .map(|&(x, y)| (xs(x), y))
                    .filter(|p| p.0.is_finite())
                    .map(|(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                    .collect();
                (!pts.is_empty()).then(|| (s, pts.join(" ")))
            })
            .collect::<Vec<_>>()
    });
    // Legend entries side by side, each as wide as its name.
    let legend = c.series.iter().scan(left + 8.0, |lx, s| {
        let at = *lx;
        *lx += 24.0 + 7.0 * s.name.len() as f64;
        Some((at, s))
    });

    // SVG elements end with `{}`, never maud's `;`: that writes `<line>`, which an HTML parser
    // leaves open inside SVG (only `/>` or `</line>` closes it), nesting what follows.
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (w) " " (h) }
            width=(w) height=(h) role="img" aria-label=(c.title) {
            title { (c.title) }
            text x=(left) y="18" class="ctitle" { (c.title) }
            @for y in y_ticks {
                @let y_at = coord(py(y));
                line x1=(left) x2=(coord(plot_right)) y1=(y_at) y2=(y_at) class="grid" {}
                text x=(coord(left - 6.0)) y=(coord(py(y) + 4.0)) class="tick" text-anchor="end" {
                    (fmt_tick(y))
                }
            }
            @for (x, label) in &x_ticks {
                @let x_at = coord(px(*x));
                line x1=(x_at) x2=(x_at) y1=(coord(tick_y1)) y2=(coord(tick_y2))
                    class=(tick_class) {}
                text x=(x_at) y=(coord(plot_bottom + 16.0)) class="tick" text-anchor="middle" {
                    (label)
                }
            }
            line x1=(left) x2=(left) y1=(top) y2=(coord(plot_bottom)) class="axis" {}
            line x1=(left) x2=(coord(plot_right)) y1=(coord(plot_bottom)) y2=(coord(plot_bottom))
                class="axis" {}
            text x=(coord(left + pw / 2.0)) y=(coord(h - 6.0)) class="label" text-anchor="middle" {
                (c.x_label)
            }
            @let y_mid = coord(top + ph / 2.0);
            text x="14" y=(y_mid) class="label" text-anchor="middle"
                transform={ "rotate(-90 14 " (y_mid) ")" } { (c.y_label) }
            // Markers: dashed verticals with their number and name (the list under the chart
            // has the whole name), so a marker keeps its number in that list even when others
            // fall outside. Labels step down so that actions close together stay readable.
            @for (i, (x, label)) in c.markers.iter().enumerate() {
                @let xv = xs(*x);
                @if (x0..=x1).contains(&xv) {
                    @let x_at = coord(px(xv));
                    @let y_at = coord(top + 10.0 + 11.0 * (i % 3) as f64);
                    line x1=(x_at) x2=(x_at) y1=(top) y2=(coord(plot_bottom)) class="marker" {
                        title { (label) }
                    }
                    text x=(coord(px(xv) + 3.0)) y=(y_at) class="mlabel" {
                        (i + 1) " " (marker_name(label))
                    }
                }
            }
            @for (s, points) in polylines {
                polyline fill="none" stroke=(s.color) stroke-width="1.6" points=(points) {
                    title { (s.name) }
                }
            }
            @if c.series.len() > 1 {
                @for (lx, s) in legend {
                    rect x=(coord(lx)) y=(coord(top - 14.0)) width="10" height="3" fill=(s.color) {}
                    text x=(coord(lx + 14.0)) y=(coord(top - 10.0)) class="tick" { (s.name) }
                }
            }
        }
    }
    .into_string()
}

/// A marker's name as its label shows it: the action and its first words, short enough to
/// sit beside the line.
fn marker_name(label: &str) -> String {
    const MAX: usize = 24;
    match label.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &label[..cut]),
        None => label.to_string(),
    }
}

/// Horizontal bars: (label, value, colour).
pub fn bars(title: &str, rows: &[(String, u64, String)], width: u32) -> String {
    let row_h = 22.0;
    let h = 30.0 + row_h * rows.len().max(1) as f64;
    let w = f64::from(width);
    let label_w = 220.0;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64;
    html! {
        svg.chart xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (w) " " (h) }
            width=(w) height=(h) role="img" aria-label=(title) {
            title { (title) }
            text x="4" y="18" class="ctitle" { (title) }
            @if rows.is_empty() {
                text x="4" y="44" class="tick" { "none" }
            }
            @for (i, (label, n, color)) in rows.iter().enumerate() {
                @let y = 30.0 + row_h * i as f64;
                @let bw = ((*n as f64 / max) * (w - label_w - 70.0)).max(1.0);
                text x="4" y=(coord(y + 12.0)) class="tick" { (label) }
                rect x=(label_w) y=(coord(y + 1.0)) width=(coord(bw)) height="14" fill=(color) {}
                text x=(coord(label_w + bw + 6.0)) y=(coord(y + 12.0)) class="tick" { (n) }
            }
        }
    }
    .into_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_and_scales() {
        assert_eq!(nice_step(100.0, 4.0), 20.0);
        assert_eq!(nice_step(7.0, 4.0), 2.0);
        assert!((percentile_x(0.99) - 2.0).abs() < 1e-9);
        assert_eq!(percentile_x(0.0), 0.0);
        assert_eq!(fmt_tick(25000.0), "25k");
    }

    #[test]
    fn charts_contain_their_data() {
        let c = Chart {
            title: "connected <clients>".into(),
            x_label: "seconds".into(),
            y_label: "clients".into(),
            series: vec![Series {
                name: "a".into(),
                color: PALETTE[0].into(),
                points: vec![(0.0, 0.0), (1.0, 10.0), (2.0, 5.0)],
            }],
            markers: vec![(1.0, "drop-all".into())],
            x_scale: XScale::Linear,
            width: 600,
            height: 240,
        };
        let svg = line_chart(&c);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("connected &lt;clients&gt;"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains("class=\"marker\""));
        assert!(svg.contains(">1 drop-all</text>"), "{svg}");
        assert_eq!(
            marker_name("drop-all close 4001 share 50%"),
            "drop-all close 4001 shar…"
        );
        assert_eq!(svg.matches("<polyline").count(), 1);
        let empty = line_chart(&Chart {
            series: vec![],
            markers: vec![],
            ..c
        });
        assert!(!empty.contains("<polyline"));
        let gaps = line_chart(&Chart {
            series: vec![Series {
                name: "p99".into(),
                color: PALETTE[1].into(),
                points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, f64::NAN), (3.0, 4.0)],
            }],
            markers: vec![],
            title: "gaps".into(),
            x_label: String::new(),
            y_label: String::new(),
            x_scale: XScale::Linear,
            width: 600,
            height: 240,
        });
        assert_eq!(
            gaps.matches("<polyline").count(),
            2,
            "a gap breaks the line"
        );
        let b = bars("codes", &[("1006".into(), 10, "#d62728".into())], 600);
        assert!(b.contains("<rect"));
    }
}
