//! Hand-written SVG learning curves: loss and accuracy per epoch, train vs
//! validation (when the run has a split) vs test, and the EMA weights' test
//! and validation curves when the run keeps an average, with axes, ticks
//! and a legend.
//!
//! Why by hand: two line charts do not justify a plotting crate (and its
//! compile time); SVG is plain text that browsers and the file viewer show.

use std::fmt::Write as _;

use super::EpochRecord;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 420.0;
const PANEL_W: f64 = WIDTH / 2.0;
const MARGIN_L: f64 = 70.0;
const MARGIN_R: f64 = 25.0;
const MARGIN_T: f64 = 70.0;
const MARGIN_B: f64 = 55.0;
const TRAIN_COLOR: &str = "#1f77b4";
const TEST_COLOR: &str = "#ff7f0e";
const VAL_COLOR: &str = "#2ca02c";
/// The EMA weights' curves: their own color, the dash of the split they
/// were evaluated on.
const EMA_COLOR: &str = "#9467bd";
/// `stroke-dasharray` of each series ("" for a solid line).
const TRAIN_DASH: &str = "";
const TEST_DASH: &str = "6 4";
const VAL_DASH: &str = "2 3";

/// Smallest "nice" number (1, 2, 2.5, 5 x 10^k) >= `x` (> 0).
fn nice_ceil(x: f64) -> f64 {
    let p = 10f64.powf(x.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * p >= x * (1.0 - 1e-12) {
            return m * p;
        }
    }
    10.0 * p
}

/// Axis tick label without float noise.
fn label(v: f64, percent: bool) -> String {
    if percent {
        format!("{}%", ((v * 1000.0).round() / 10.0))
    } else {
        let r = (v * 1e6).round() / 1e6;
        format!("{r}")
    }
}

struct Panel<'a> {
    x0: f64,
    title: &'a str,
    percent: bool,
    y_lo: f64,
    y_hi: f64,
    x_lo: f64,
    x_hi: f64,
}

impl Panel<'_> {
    fn px(&self, x: f64) -> f64 {
        let w = PANEL_W - MARGIN_L - MARGIN_R;
        self.x0 + MARGIN_L + (x - self.x_lo) / (self.x_hi - self.x_lo) * w
    }

    fn py(&self, y: f64) -> f64 {
        let h = HEIGHT - MARGIN_T - MARGIN_B;
        MARGIN_T + h - (y - self.y_lo) / (self.y_hi - self.y_lo) * h
    }

    fn axes(&self, s: &mut String, x_ticks: &[f64]) {
        let (left, right) = (self.px(self.x_lo), self.px(self.x_hi));
        let (top, bottom) = (self.py(self.y_hi), self.py(self.y_lo));
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
            (left + right) / 2.0,
            top - 12.0,
            self.title
        );
        for i in 0..=5 {
            let v = self.y_lo + (self.y_hi - self.y_lo) * i as f64 / 5.0;
            let y = self.py(v);
            let _ = writeln!(
                s,
                r##"<line x1="{left:.1}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" stroke="#e0e0e0"/>"##
            );
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="end" font-size="12">{}</text>"#,
                left - 6.0,
                y + 4.0,
                label(v, self.percent)
            );
        }
        for &e in x_ticks {
            let x = self.px(e);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{bottom:.1}" x2="{x:.1}" y2="{:.1}" stroke="#000"/>"##,
                bottom + 5.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle" font-size="12">{e}</text>"#,
                bottom + 19.0
            );
        }
        let _ = writeln!(
            s,
            r##"<path d="M{left:.1},{top:.1} V{bottom:.1} H{right:.1}" fill="none" stroke="#000"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="13">epoch</text>"#,
            (left + right) / 2.0,
            bottom + 40.0
        );
    }

    fn series(&self, s: &mut String, class: &str, color: &str, dash: &str, pts: &[(f64, f64)]) {
        if pts.is_empty() {
            return;
        }
        let coords: Vec<String> = pts
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect();
        let dash = dash_attr(dash);
        let _ = writeln!(
            s,
            r#"<polyline class="{class}" points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
            coords.join(" ")
        );
        for &(x, y) in pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                self.px(x),
                self.py(y)
            );
        }
    }
}

fn dash_attr(dash: &str) -> String {
    if dash.is_empty() {
        String::new()
    } else {
        format!(r#" stroke-dasharray="{dash}""#)
    }
}

fn points(records: &[EpochRecord], f: impl Fn(&EpochRecord) -> Option<f64>) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter_map(|r| f(r).filter(|v| v.is_finite()).map(|v| (r.epoch as f64, v)))
        .collect()
}

/// Renders the learning curves of `records` as a standalone SVG document.
/// Non-finite values and unevaluated epochs are left out of the lines.
pub fn learning_curves_svg(records: &[EpochRecord]) -> String {
    let train_loss = points(records, |r| Some(r.train_loss));
    let test_loss = points(records, |r| r.test_loss);
    let train_acc = points(records, |r| Some(r.train_acc));
    let test_acc = points(records, |r| r.test_acc);
    let val_loss = points(records, |r| r.val_loss);
    let val_acc = points(records, |r| r.val_acc);
    let ema_test_loss = points(records, |r| r.ema_test_loss);
    let ema_test_acc = points(records, |r| r.ema_test_acc);
    let ema_val_loss = points(records, |r| r.ema_val_loss);
    let ema_val_acc = points(records, |r| r.ema_val_acc);

    let (mut x_lo, mut x_hi) = records.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| {
        (lo.min(r.epoch as f64), hi.max(r.epoch as f64))
    });
    if records.is_empty() {
        (x_lo, x_hi) = (0.0, 1.0);
    }
    if x_hi <= x_lo {
        (x_lo, x_hi) = (x_lo - 0.5, x_hi + 0.5);
    }
    let step = ((x_hi - x_lo) / 10.0).ceil().max(1.0);
    let mut x_ticks = Vec::new();
    let mut t = x_lo.ceil();
    while t <= x_hi {
        x_ticks.push(t);
        t += step;
    }

    let max_loss = train_loss
        .iter()
        .chain(&test_loss)
        .chain(&val_loss)
        .chain(&ema_test_loss)
        .chain(&ema_val_loss)
        .map(|p| p.1)
        .fold(0.0, f64::max);
    let loss_hi = if max_loss > 0.0 {
        nice_ceil(max_loss)
    } else {
        1.0
    };
    let min_acc = train_acc
        .iter()
        .chain(&test_acc)
        .chain(&val_acc)
        .chain(&ema_test_acc)
        .chain(&ema_val_acc)
        .map(|p| p.1)
        .fold(1.0, f64::min);
    let acc_lo = ((min_acc * 10.0).floor() / 10.0).clamp(0.0, 0.9);

    let loss = Panel {
        x0: 0.0,
        title: "Loss",
        percent: false,
        y_lo: 0.0,
        y_hi: loss_hi,
        x_lo,
        x_hi,
    };
    let acc = Panel {
        x0: PANEL_W,
        title: "Accuracy",
        percent: true,
        y_lo: acc_lo,
        y_hi: 1.0,
        x_lo,
        x_hi,
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    // Legend, centred at the top.
    let mut legend = vec![("train", TRAIN_COLOR, TRAIN_DASH)];
    if !val_loss.is_empty() || !val_acc.is_empty() {
        legend.push(("val", VAL_COLOR, VAL_DASH));
    }
    legend.push(("test", TEST_COLOR, TEST_DASH));
    if !ema_val_loss.is_empty() || !ema_val_acc.is_empty() {
        legend.push(("EMA val", EMA_COLOR, VAL_DASH));
    }
    if !ema_test_loss.is_empty() || !ema_test_acc.is_empty() {
        legend.push(("EMA test", EMA_COLOR, TEST_DASH));
    }
    let x_first = WIDTH / 2.0 - 50.0 * legend.len() as f64 + 10.0;
    for (i, (name, color, dash)) in legend.iter().enumerate() {
        let x = x_first + i as f64 * 100.0;
        let dash = dash_attr(dash);
        let _ = writeln!(
            s,
            r#"<g class="legend"><line x1="{x:.1}" y1="20" x2="{:.1}" y2="20" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="24" font-size="13">{name}</text></g>"#,
            x + 28.0,
            x + 34.0
        );
    }
    loss.axes(&mut s, &x_ticks);
    loss.series(&mut s, "train-loss", TRAIN_COLOR, TRAIN_DASH, &train_loss);
    loss.series(&mut s, "val-loss", VAL_COLOR, VAL_DASH, &val_loss);
    loss.series(&mut s, "test-loss", TEST_COLOR, TEST_DASH, &test_loss);
    loss.series(&mut s, "ema-val-loss", EMA_COLOR, VAL_DASH, &ema_val_loss);
    loss.series(
        &mut s,
        "ema-test-loss",
        EMA_COLOR,
        TEST_DASH,
        &ema_test_loss,
    );
    acc.axes(&mut s, &x_ticks);
    acc.series(&mut s, "train-acc", TRAIN_COLOR, TRAIN_DASH, &train_acc);
    acc.series(&mut s, "val-acc", VAL_COLOR, VAL_DASH, &val_acc);
    acc.series(&mut s, "test-acc", TEST_COLOR, TEST_DASH, &test_acc);
    acc.series(&mut s, "ema-val-acc", EMA_COLOR, VAL_DASH, &ema_val_acc);
    acc.series(&mut s, "ema-test-acc", EMA_COLOR, TEST_DASH, &ema_test_acc);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::sample;
    use super::*;

    /// Minimal XML well-formedness: tags balance and nest.
    fn check_balanced(svg: &str) {
        let mut stack = Vec::new();
        let mut rest = svg;
        while let Some(start) = rest.find('<') {
            let end = rest[start..].find('>').expect("unclosed tag") + start;
            let tag = &rest[start + 1..end];
            assert!(!tag.contains('<'), "nested '<' in {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop(), Some(name.to_string()), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                stack.push(tag.split_whitespace().next().unwrap().to_string());
            }
            rest = &rest[end + 1..];
        }
        assert!(stack.is_empty(), "unclosed: {stack:?}");
    }

    fn polyline_points(svg: &str, class: &str) -> usize {
        let tag = format!(r#"class="{class}" points=""#);
        let Some(i) = svg.find(&tag) else { return 0 };
        let rest = &svg[i + tag.len()..];
        rest[..rest.find('"').unwrap()].split(' ').count()
    }

    #[test]
    fn svg_has_curves_axes_and_legend() {
        let mut log = sample();
        for e in 3..=12 {
            let mut r = log.records[0].clone();
            r.epoch = e;
            r.train_loss = 1.0 / e as f64;
            r.test_acc = Some(0.5 + e as f64 / 30.0);
            log.records.push(r);
        }
        let svg = learning_curves_svg(&log.records);
        check_balanced(&svg);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 6);
        assert_eq!(polyline_points(&svg, "val-loss"), 11); // epoch 2 has no split
        assert_eq!(polyline_points(&svg, "val-acc"), 11);
        assert!(svg.contains(">val<"));
        assert_eq!(polyline_points(&svg, "train-loss"), 12);
        assert_eq!(polyline_points(&svg, "test-loss"), 11); // epoch 2 not evaluated
        assert_eq!(polyline_points(&svg, "train-acc"), 12);
        assert_eq!(polyline_points(&svg, "test-acc"), 11);
        assert!(svg.contains(">Loss<") && svg.contains(">Accuracy<") && svg.contains(">epoch<"));
        assert!(svg.contains(">train<") && svg.contains(">test<"));
        assert!(svg.contains(">100%<"), "accuracy axis ends at 100%");
        // 12 epochs: ticks every 2 epochs from the first.
        assert!(svg.contains(">1</text>") && svg.contains(">11</text>"));
        assert!(!svg.contains(">12</text>"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn degenerate_inputs_still_render() {
        // Without a validation split, neither its lines nor its legend.
        let mut no_val = sample().records;
        for r in &mut no_val {
            (r.val_loss, r.val_acc) = (None, None);
        }
        let svg = learning_curves_svg(&no_val);
        assert!(!svg.contains(">val<") && !svg.contains("val-loss"));
        assert_eq!(svg.matches(r#"class="legend""#).count(), 2);
        for recs in [vec![], sample().records[..1].to_vec()] {
            let svg = learning_curves_svg(&recs);
            check_balanced(&svg);
            assert!(!svg.contains("NaN"), "{svg}");
        }
        let mut r = sample().records;
        r[0].train_loss = f64::NAN;
        let svg = learning_curves_svg(&r);
        check_balanced(&svg);
        assert!(!svg.contains("NaN"));
        assert_eq!(polyline_points(&svg, "train-loss"), 1);
    }

    #[test]
    fn ema_curves_are_drawn_when_the_run_keeps_an_average() {
        let mut records = sample().records;
        assert!(!learning_curves_svg(&records).contains("ema-"));
        for (i, r) in records.iter_mut().enumerate() {
            r.ema_test_loss = Some(0.5 + i as f64);
            r.ema_test_acc = Some(0.05);
        }
        records[0].ema_test_acc = None;
        let svg = learning_curves_svg(&records);
        check_balanced(&svg);
        assert_eq!(polyline_points(&svg, "ema-test-loss"), records.len());
        assert_eq!(polyline_points(&svg, "ema-test-acc"), records.len() - 1);
        assert!(svg.contains(">EMA test<") && !svg.contains(">EMA val<"));
        assert!(!svg.contains("ema-val-"));
        // Its accuracy of 5% sets the axis' lower end.
        assert!(svg.contains(">0%<"), "{svg}");
    }

    #[test]
    fn nice_numbers() {
        assert_eq!(nice_ceil(0.83), 1.0);
        assert_eq!(nice_ceil(1.3), 2.0);
        assert_eq!(nice_ceil(2.2), 2.5);
        assert_eq!(nice_ceil(3.0), 5.0);
        assert_eq!(nice_ceil(2.0), 2.0);
        assert_eq!(label(0.3 + 0.6, true), "90%");
        assert_eq!(label(0.1 + 0.2, false), "0.3");
    }
}
