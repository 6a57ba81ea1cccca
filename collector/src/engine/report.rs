//! Counting and logging of hot-path problems.
//!
//! Invariants: every problem is counted through the [`Emitter`]; it is logged at most once per
//! (subject, cause), where the subject is a file path or a drain, so a file full of garbage
//! produces one log line and a counter that keeps rising. The memory of what was logged is
//! bounded (it is forgotten wholesale past [`MAX_REMEMBERED`] entries).

use std::{collections::HashSet, path::Path, sync::Arc};

use super::Emitter;

/// How many (subject, cause) pairs are remembered before the memory is cleared.
const MAX_REMEMBERED: usize = 10_000;

/// The engine's reporting front: the emitter plus the log rate limit.
pub struct Reporter {
    /// The metrics sink.
    pub emitter: Arc<dyn Emitter>,
    logged: HashSet<(String, &'static str)>,
}

impl Reporter {
    /// Report through `emitter`.
    pub fn new(emitter: Arc<dyn Emitter>) -> Self {
        Self {
            emitter,
            logged: HashSet::new(),
        }
    }

    fn first_time(&mut self, subject: &str, cause: &'static str) -> bool {
        if self.logged.len() >= MAX_REMEMBERED {
            self.logged.clear();
        }
        self.logged.insert((subject.to_owned(), cause))
    }

    /// Bad input in `path`, counted `n` times.
    pub fn input(&mut self, path: &Path, cause: &'static str, n: u64, detail: &dyn std::fmt::Display) {
        for _ in 0..n {
            self.emitter.input_error(cause);
        }
        if self.first_time(&path.to_string_lossy(), cause) {
            tracing::warn!(path = %path.display(), cause, "bad input in a log file, skipped: {detail} (logged once per file and cause)");
        }
    }

    /// A problem with `path` that persists across rescans: counted and logged once.
    pub fn input_once(&mut self, path: &Path, cause: &'static str, detail: &dyn std::fmt::Display) {
        if self.first_time(&path.to_string_lossy(), cause) {
            self.emitter.input_error(cause);
            tracing::warn!(path = %path.display(), cause, "cannot tail this file: {detail}");
        }
    }

    /// Lines `drain` will never get.
    pub fn dropped(&mut self, drain: &str, cause: &'static str, lines: u64, detail: &dyn std::fmt::Display) {
        self.emitter.lines_dropped(drain, cause, lines);
        tracing::warn!(drain, cause, lines, "lines lost for this drain: {detail}");
    }
}
