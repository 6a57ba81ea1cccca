//! Plain tables in kubectl's layout: upper-case headers, columns padded to their widest cell and
//! three spaces apart, no trailing spaces. Cells come from objects tenants write, so control
//! characters (a terminal escape, a newline) are shown as `?` rather than interpreted.

/// A table being built.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.iter().map(|c| printable(c)).collect());
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, ending in a newline.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count() + 3));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `text` with every control character replaced by `?`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// A byte count the way people read it: `0`, `512B`, `1.5KiB`, `3.0MiB`, `2.0GiB`.
pub fn bytes(count: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if count < 1024 {
        return if count == 0 {
            "0".into()
        } else {
            format!("{count}B")
        };
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// How long ago `then` was, kubectl-style (`45s`, `12m`, `3h`, `5d`).
pub fn age(then: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let secs = now.duration_since(then).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_and_lines_have_no_trailing_space() {
        let mut t = Table::new(&["NAME", "READY"]);
        t.row(vec!["syslog-main".into(), "True".into()]);
        t.row(vec!["h".into(), "".into()]);
        assert_eq!(t.render(), "NAME          READY\nsyslog-main   True\nh\n");
    }

    #[test]
    fn control_characters_are_not_printed() {
        let mut t = Table::new(&["X"]);
        t.row(vec!["a\u{1b}[31mb\nc".into()]);
        assert_eq!(t.render(), "X\na?[31mb?c\n");
    }

    #[test]
    fn byte_counts() {
        for (n, want) in [
            (0, "0"),
            (512, "512B"),
            (1536, "1.5KiB"),
            (3 << 20, "3.0MiB"),
            (-5, "-5B"),
        ] {
            assert_eq!(bytes(n), want);
        }
    }
}
