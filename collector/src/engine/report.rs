//! Counting and logging of hot-path problems.
//!
//! Invariants: every problem is counted through the [`Emitter`]; it is logged at most once per
//! (subject, cause), where the subject is a file path or a drain, so a file full of garbage
//! produces one log line and a counter that keeps rising. The memory of what was logged is
//! bounded (it is forgotten wholesale past [`MAX_REMEMBERED`] entries).

use std::{collections::HashSet, path::Path, sync::Arc};

use super::Emitter;
use crate::pipeline::ContainerMeta;

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

    /// Bad input in `path`, counted `count` times.
    pub fn input(&mut self, path: &Path, cause: &'static str, count: u64, detail: &dyn std::fmt::Display) {
        for _ in 0..count {
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

    /// Lines of container `whose` that `drain` will never get: counted per drain and cause, and
    /// logged naming the drain and the container (namespace, pod, container; on a plain Docker
    /// host the pod is the container's name), so whoever owns either can tell it is theirs.
    pub fn dropped(
        &mut self,
        drain: &str,
        whose: &ContainerMeta,
        cause: &'static str,
        lines: u64,
        detail: &dyn std::fmt::Display,
    ) {
        self.emitter.lines_dropped(drain, cause, lines);
        tracing::warn!(
            drain,
            namespace = %whose.namespace,
            pod = %whose.pod,
            container = %whose.container,
            cause,
            lines,
            "lines lost for this drain: {detail}"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A `MakeWriter` that keeps what was logged.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_loss_names_the_drain_and_the_container() {
        let metrics = crate::metrics::Metrics::new().unwrap();
        let mut rep = Reporter::new(Arc::new(metrics.clone()));
        let whose = ContainerMeta {
            namespace: "shop".into(),
            pod: "web-1".into(),
            container: "app".into(),
            ..ContainerMeta::default()
        };
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            rep.dropped("audit", &whose, "rotated_away", 3, &"the file was deleted unread");
        });
        let logged = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        for field in [
            "drain=\"audit\"",
            "namespace=shop",
            "pod=web-1",
            "container=app",
            "lines=3",
        ] {
            assert!(logged.contains(field), "{field} missing from: {logged}");
        }
        assert!(logged.contains("the file was deleted unread"), "{logged}");
        let counted = metrics
            .lines_dropped
            .with_label_values(&["audit", "rotated_away"])
            .get();
        assert_eq!(counted, 3);
    }
}
