//! Small text helpers for the reports: an error's first line, milliseconds.

/// The first line of `e`, at most 160 characters.
pub(crate) fn short(e: &str) -> String {
    let line = e.lines().next().unwrap_or("");
    line.chars().take(160).collect()
}

pub(crate) fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}
