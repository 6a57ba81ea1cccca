//! Exact comparison of the lines written with the lines received.
//!
//! A [`Multiset`] counts each distinct line. [`compare`] reports what is missing (written more
//! often than received), duplicated (received more often than written) and unexpected (received,
//! never written), each with a few examples, so a failing test says precisely what went wrong.

use std::{collections::BTreeMap, fmt};

/// A multiset of lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Multiset {
    counts: BTreeMap<String, u64>,
    total: u64,
}

impl Multiset {
    /// An empty multiset.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one occurrence of `line`.
    pub fn add(&mut self, line: impl Into<String>) {
        *self.counts.entry(line.into()).or_default() += 1;
        self.total += 1;
    }

    /// Number of lines, counting repeats.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether it holds no line.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How often `line` occurs.
    pub fn count(&self, line: &str) -> u64 {
        self.counts.get(line).copied().unwrap_or(0)
    }

    /// Add every occurrence of `other`.
    pub fn merge(&mut self, other: &Multiset) {
        for (line, n) in other.iter() {
            *self.counts.entry(line.to_owned()).or_default() += n;
            self.total += n;
        }
    }

    /// Every distinct line with its count.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.counts.iter().map(|(k, v)| (k.as_str(), *v))
    }
}

impl<S: Into<String>> FromIterator<S> for Multiset {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut m = Multiset::new();
        for line in iter {
            m.add(line);
        }
        m
    }
}

impl<S: Into<String>> Extend<S> for Multiset {
    fn extend<I: IntoIterator<Item = S>>(&mut self, iter: I) {
        for line in iter {
            self.add(line);
        }
    }
}

/// The difference between what was written and what was received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Lines written.
    pub written: u64,
    /// Lines received.
    pub received: u64,
    /// Occurrences written but not received.
    pub missing: u64,
    /// Extra occurrences of lines that were written (re-sent).
    pub duplicated: u64,
    /// Occurrences of lines that were never written.
    pub unexpected: u64,
    /// A few examples of each, `(line, written, received)`.
    pub examples: Vec<(String, u64, u64)>,
}

impl Diff {
    /// Whether received equals written exactly.
    pub fn is_exact(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.unexpected == 0
    }
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "written {} received {}: missing {}, duplicated {}, unexpected {}",
            self.written, self.received, self.missing, self.duplicated, self.unexpected
        )?;
        for (line, w, r) in &self.examples {
            let shown: String = line.chars().take(100).collect();
            let more = if line.len() > shown.len() {
                format!("… ({} bytes)", line.len())
            } else {
                String::new()
            };
            writeln!(f, "  written {w}× received {r}×: {shown:?}{more}")?;
        }
        Ok(())
    }
}

/// Compare `written` with `received`.
pub fn compare(written: &Multiset, received: &Multiset) -> Diff {
    const EXAMPLES_PER_KIND: usize = 5;
    let mut diff = Diff {
        written: written.len(),
        received: received.len(),
        ..Diff::default()
    };
    let (mut n_missing, mut n_dup, mut n_unexpected) = (0, 0, 0);
    let mut example = |line: &str, w: u64, r: u64, shown: &mut usize| {
        if *shown < EXAMPLES_PER_KIND {
            diff.examples.push((line.to_owned(), w, r));
            *shown += 1;
        }
    };
    for (line, w) in written.iter() {
        let r = received.count(line);
        if r < w {
            example(line, w, r, &mut n_missing);
        } else if r > w {
            example(line, w, r, &mut n_dup);
        }
    }
    for (line, r) in received.iter() {
        if written.count(line) == 0 {
            example(line, 0, r, &mut n_unexpected);
        }
    }
    for (line, w) in written.iter() {
        let r = received.count(line);
        diff.missing += w.saturating_sub(r);
        diff.duplicated += r.saturating_sub(w);
    }
    diff.unexpected = received
        .iter()
        .filter(|(l, _)| written.count(l) == 0)
        .map(|(_, r)| r)
        .sum();
    diff
}

/// Panic unless `received` equals `written` exactly (zero loss, zero duplicates).
pub fn assert_exact(what: &str, written: &Multiset, received: &Multiset) {
    let diff = compare(written, received);
    assert!(
        diff.is_exact(),
        "{what}: received lines differ from the lines written\n{diff}"
    );
    eprintln!(
        "{what}: {} lines written, all received exactly once",
        diff.written
    );
}

/// Panic on any missing or unexpected line; return the number of duplicates (re-sent lines).
pub fn assert_no_loss(what: &str, written: &Multiset, received: &Multiset) -> u64 {
    let diff = compare(written, received);
    assert!(
        diff.missing == 0 && diff.unexpected == 0,
        "{what}: lines were lost or invented\n{diff}"
    );
    eprintln!(
        "{what}: {} lines written, none lost, {} duplicates",
        diff.written, diff.duplicated
    );
    diff.duplicated
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_missing_duplicated_and_unexpected() {
        let written: Multiset = ["a", "b", "b", "c"].into_iter().collect();
        let received: Multiset = ["a", "a", "b", "x"].into_iter().collect();
        let diff = compare(&written, &received);
        assert_eq!((diff.missing, diff.duplicated, diff.unexpected), (2, 1, 1));
        assert_eq!(diff.examples.len(), 4);
        assert!(compare(&written, &written).is_exact());
        let text = diff.to_string();
        assert!(text.contains("written 4 received 4"), "{text}");
    }
}
