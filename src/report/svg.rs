//! Charts as inline SVG, drawn from the data. Hand-written rather than a chart library or a
//! vendored script: the report needs a few line charts, vertical markers, a log-scaled
//! percentile axis and bars; SVG renders and prints without any script, keeps the report one
//! self-contained file, and costs no dependency.

use std::fmt::Write;

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

/// Escape text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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

    let mut o = String::new();
    let _ = write!(
        o,
        r##"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}"><title>{t}</title>"##,
        t = esc(&c.title)
    );
    let _ = write!(
        o,
        r##"<text x="{left}" y="18" class="ctitle">{}</text>"##,
        esc(&c.title)
    );
    // Grid and y ticks.
    let mut y = 0.0;
    while y <= y1 + 1e-9 {
        let _ = write!(
            o,
            r##"<line x1="{left}" x2="{:.1}" y1="{yy:.1}" y2="{yy:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            py(y) + 4.0,
            fmt_tick(y),
            yy = py(y)
        );
        y += y_step;
    }
    // x ticks.
    match c.x_scale {
        XScale::Linear => {
            let step = nice_step(x1 - x0, 6.0);
            let mut x = (x0 / step).ceil() * step;
            while x <= x1 + 1e-9 {
                let _ = write!(
                    o,
                    r##"<line x1="{p:.1}" x2="{p:.1}" y1="{:.1}" y2="{:.1}" class="axis"/><text x="{p:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
                    top + ph,
                    top + ph + 4.0,
                    top + ph + 16.0,
                    fmt_tick(x),
                    p = px(x)
                );
                x += step;
            }
        }
        XScale::Percentile => {
            for (k, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"]
                .iter()
                .enumerate()
            {
                let x = k as f64;
                if x > x1 + 1e-9 {
                    break;
                }
                let _ = write!(
                    o,
                    r##"<line x1="{p:.1}" x2="{p:.1}" y1="{top:.1}" y2="{:.1}" class="grid"/><text x="{p:.1}" y="{:.1}" class="tick" text-anchor="middle">{label}</text>"##,
                    top + ph,
                    top + ph + 16.0,
                    p = px(x)
                );
            }
        }
    }
    let _ = write!(
        o,
        r##"<line x1="{left}" x2="{left}" y1="{top}" y2="{:.1}" class="axis"/><line x1="{left}" x2="{:.1}" y1="{:.1}" y2="{:.1}" class="axis"/>"##,
        top + ph,
        left + pw,
        top + ph,
        top + ph
    );
    let _ = write!(
        o,
        r##"<text x="{:.1}" y="{:.1}" class="label" text-anchor="middle">{}</text><text x="14" y="{:.1}" class="label" text-anchor="middle" transform="rotate(-90 14 {:.1})">{}</text>"##,
        left + pw / 2.0,
        h - 6.0,
        esc(&c.x_label),
        top + ph / 2.0,
        top + ph / 2.0,
        esc(&c.y_label)
    );
    // Markers: dashed verticals with a number; the list under the chart says what they are.
    for (i, (x, label)) in c.markers.iter().enumerate() {
        let xv = xs(*x);
        if xv < x0 || xv > x1 {
            continue;
        }
        let _ = write!(
            o,
            r##"<line x1="{p:.1}" x2="{p:.1}" y1="{top}" y2="{:.1}" class="marker"><title>{}</title></line><text x="{:.1}" y="{:.1}" class="mlabel">{}</text>"##,
            top + ph,
            esc(label),
            px(xv) + 3.0,
            top + 10.0,
            i + 1,
            p = px(xv)
        );
    }
    for s in &c.series {
        let pts: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| (xs(x), y))
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let _ = write!(
            o,
            r##"<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"><title>{}</title></polyline>"##,
            s.color,
            pts.join(" "),
            esc(&s.name)
        );
    }
    // Legend.
    if c.series.len() > 1 {
        let mut lx = left + 8.0;
        for s in &c.series {
            let _ = write!(
                o,
                r##"<rect x="{lx:.1}" y="{:.1}" width="10" height="3" fill="{}"/><text x="{:.1}" y="{:.1}" class="tick">{}</text>"##,
                top - 14.0,
                s.color,
                lx + 14.0,
                top - 10.0,
                esc(&s.name)
            );
            lx += 24.0 + 7.0 * s.name.len() as f64;
        }
    }
    o.push_str("</svg>");
    o
}

/// Horizontal bars: (label, value, colour).
pub fn bars(title: &str, rows: &[(String, u64, String)], width: u32) -> String {
    let row_h = 22.0;
    let h = 30.0 + row_h * rows.len().max(1) as f64;
    let w = f64::from(width);
    let label_w = 220.0;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64;
    let mut o = String::new();
    let _ = write!(
        o,
        r##"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}"><title>{t}</title><text x="4" y="18" class="ctitle">{t}</text>"##,
        t = esc(title)
    );
    if rows.is_empty() {
        let _ = write!(o, r##"<text x="4" y="44" class="tick">none</text>"##);
    }
    for (i, (label, n, color)) in rows.iter().enumerate() {
        let y = 30.0 + row_h * i as f64;
        let bw = ((*n as f64 / max) * (w - label_w - 70.0)).max(1.0);
        let _ = write!(
            o,
            r##"<text x="4" y="{:.1}" class="tick">{}</text><rect x="{label_w}" y="{:.1}" width="{bw:.1}" height="14" fill="{color}"/><text x="{:.1}" y="{:.1}" class="tick">{n}</text>"##,
            y + 12.0,
            esc(label),
            y + 1.0,
            label_w + bw + 6.0,
            y + 12.0
        );
    }
    o.push_str("</svg>");
    o
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
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
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
        assert_eq!(svg.matches("<polyline").count(), 1);
        let empty = line_chart(&Chart {
            series: vec![],
            markers: vec![],
            ..c
        });
        assert!(!empty.contains("<polyline"));
        let b = bars("codes", &[("1006".into(), 10, "#d62728".into())], 600);
        assert!(b.contains("<rect"));
    }
}
