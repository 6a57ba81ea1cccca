//! Model-based test of the tail engine: random sequences of writes (short lines and lines over
//! 16 KiB that Docker splits, on both streams, some split across a rotation), Docker rotations,
//! copy-truncate, gzipped rotated files (`compress=true`), deletions, graceful restarts and kills,
//! and short-lived second containers (created with no file, then run and exited while the
//! engine's loop is held still or its drain's channel is full, with looks before and after the
//! writes), checked against a model of what was written.
//!
//! Checked: every line written arrives, except lines whose file was deleted while the engine was
//! down (then the loss must have been counted); no line arrives that was not written; no line
//! arrives twice unless a kill happened, and then at most as many repeats as lines delivered
//! before the kills. `PROPTEST_CASES` sets the number of cases (default 48, of up to 60 ops;
//! about 28 s on 2 busy cores).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/engine.rs"]
mod support;

use std::{collections::BTreeMap, fs, io::Write as _, path::PathBuf, time::Duration};

use flate2::{Compression, write::GzEncoder};

use proptest::{prelude::*, test_runner::TestRunner};
use sluice_api::node_config::Stream;
use support::*;

const MAX_FILE: usize = 4;
const T: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
enum Op {
    Write {
        lines: u8,
        long: bool,
        stderr: bool,
    },
    SplitAcrossRotation,
    Rotate,
    CopyTruncate,
    CompressRotated,
    DeleteOldest,
    Restart,
    Kill {
        delete_while_down: bool,
    },
    /// A short-lived second container: created (seen by a look with no log file, or an empty
    /// one), then started, written and exited, either while the engine's loop is held still or
    /// while the drain's channel is full (then a look comes after the writes, before the drain
    /// takes anything again).
    Lifecycle {
        lines: u8,
        seen_empty: bool,
        paused: bool,
        drain_full: bool,
    },
}

/// Weight of an op kind: `MODEL_WEIGHTS=split:2,copy:0,kill:1,killdelete:0` overrides the
/// defaults (every kind on, weight 1; `killdelete:0` makes every kill leave the files alone).
/// Cases found once run as `regressions`.
fn weight(name: &str, default: u32) -> u32 {
    std::env::var("MODEL_WEIGHTS")
        .ok()
        .and_then(|v| {
            v.split(',').find_map(|kv| {
                kv.split_once(':')
                    .filter(|(k, _)| *k == name)
                    .and_then(|(_, w)| w.parse().ok())
            })
        })
        .unwrap_or(default)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..40, prop::bool::weighted(0.15), any::<bool>()).prop_map(|(lines, long, stderr)| Op::Write { lines, long, stderr }),
        weight("split", 1) => Just(Op::SplitAcrossRotation),
        3 => Just(Op::Rotate),
        weight("copy", 1) => Just(Op::CopyTruncate),
        weight("compress", 1) => Just(Op::CompressRotated),
        1 => Just(Op::DeleteOldest),
        1 => Just(Op::Restart),
        weight("lifecycle", 1) => (1u8..60, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(lines, seen_empty, paused, drain_full)| Op::Lifecycle { lines, seen_empty, paused, drain_full }),
        weight("kill", 1) => prop::bool::weighted(if weight("killdelete", 1) > 0 { 0.5 } else { 0.0 })
            .prop_map(|delete_while_down| Op::Kill { delete_while_down }),
    ]
}

/// One file on disk, as the model knows it.
#[derive(Default)]
struct ModelFile {
    /// Lines with a fragment in this file.
    lines: Vec<String>,
    /// Its last line continues in the next file.
    splits_into_next: bool,
    /// Gzipped (`<id>-json.log.N.gz`), as Docker does with `compress=true`.
    compressed: bool,
    /// A copy made by copy-truncate.
    copy: bool,
}

struct Model<'a> {
    node: &'a Node,
    drain: &'a MockDrain,
    c: DockerContainer,
    /// Oldest first; the last is the current file.
    files: Vec<ModelFile>,
    written: Vec<String>,
    may_be_lost: Vec<String>,
    delivered_before_kills: usize,
    kills: usize,
    /// Lines were deleted while down before the first checkpoint: their loss cannot be known.
    uncountable: bool,
    /// A kill came before the first checkpoint, or an engine started without one while a
    /// compressed file (history, not read) ended in a split line: the engine starts from the
    /// oldest file it reads, whose first record may continue a line that began in a file deleted
    /// or not read. Nothing marks such a record as a continuation, so its cut line cannot be
    /// known either.
    blind_restart: bool,
    n: usize,
    engine: Option<sluice_collector::engine::EngineHandle>,
    /// The short-lived containers of `Lifecycle` ops, routed like `c`.
    others: Vec<DockerContainer>,
}

impl Model<'_> {
    fn start(&mut self) {
        // Without a checkpoint the engine starts at the oldest file on disk: compressed history
        // is not read, and what it held was never known to be missed.
        // The last line of such a file may go on in the next one: that tail arrives alone.
        if !self.checkpointed() {
            for f in self.files.iter().filter(|f| f.compressed) {
                self.uncountable |= !f.lines.is_empty();
                self.blind_restart |= f.splits_into_next;
                self.may_be_lost.extend(f.lines.iter().cloned());
            }
        }
        self.engine = Some(self.node.start(self.node.settings(), self.routes()));
    }

    fn routes(&self) -> sluice_collector::engine::Routes {
        let containers = std::iter::once(&self.c).chain(&self.others);
        routes(&[self.drain], containers.map(|c| c.config(&["a"])).collect())
    }

    /// A second container's whole life (see [`Op::Lifecycle`]). Its lines must all arrive.
    fn lifecycle(&mut self, lines: u8, seen_empty: bool, paused: bool, drain_full: bool) {
        let b = DockerContainer::new(&self.node.docker_root(), 1000 + self.others.len());
        b.set_created();
        if seen_empty {
            b.append_raw(b"");
        }
        self.others.push(b);
        let engine = self.engine.as_ref().expect("invariant: running");
        engine.apply(self.routes());
        engine.rescan().unwrap();
        // Rounds read what there is (nothing) before the container runs.
        engine.rescan().unwrap();
        let hold = paused.then(|| engine.pause().unwrap());
        if drain_full {
            self.drain
                .paused
                .store(true, std::sync::atomic::Ordering::Release);
            if !paused {
                // More than the channel and a batch being built hold: the engine stops reading.
                self.write(255, false, false);
                self.write(255, false, false);
            }
        }
        let b = self.others.last().expect("invariant: just pushed");
        b.set_running(true);
        let mut text = String::new();
        let mut written = Vec::new();
        for _ in 0..lines {
            self.n += 1;
            let m = format!("{}-b{}", self.n, "r".repeat(20 + self.n % 90));
            text.push_str(&docker_records(Stream::Stdout, &m));
            written.push(format!("stdout:{m}"));
        }
        let b = self.others.last().expect("invariant: just pushed");
        b.append_raw(text.as_bytes());
        b.set_running(false);
        self.written.extend(written);
        let engine = self.engine.as_ref().expect("invariant: running");
        if !paused {
            engine.rescan().unwrap();
        }
        drop(hold);
        if drain_full {
            if !paused {
                engine.rescan().unwrap();
            }
            self.drain
                .paused
                .store(false, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether the engine's checkpoint holds a cursor for the container.
    fn checkpointed(&self) -> bool {
        fs::read_to_string(self.node.tmp.path().join("state/checkpoints.json"))
            .is_ok_and(|text| text.contains(&self.c.id))
    }

    fn line(&mut self, long: bool) -> String {
        self.n += 1;
        let pad = if long {
            16 * 1024 + (self.n * 977) % 20_000
        } else {
            20 + (self.n * 31) % 150
        };
        format!("{}-{}", self.n, "q".repeat(pad))
    }

    fn write(&mut self, lines: u8, long: bool, stderr: bool) {
        let stream = if stderr { Stream::Stderr } else { Stream::Stdout };
        let mut text = String::new();
        for _ in 0..lines {
            let m = self.line(long);
            text.push_str(&docker_records(stream, &m));
            let line = format!("{}:{m}", stream.as_str());
            self.files
                .last_mut()
                .expect("invariant: a current file")
                .lines
                .push(line.clone());
            self.written.push(line);
        }
        self.c.append_raw(text.as_bytes());
    }

    /// Wait until every line with a fragment in file `index` has arrived (the engine is up).
    fn settle(&mut self, index: usize) {
        let want: Vec<String> = self.files[index]
            .lines
            .iter()
            .filter(|l| !self.may_be_lost.contains(l))
            .cloned()
            .collect();
        let arrived = poll(T, || {
            let got = self.drain.messages();
            want.iter().all(|l| got.contains(l))
        });
        if arrived {
            return;
        }
        let got = self.drain.messages();
        let missing: Vec<String> = want.iter().filter(|l| !got.contains(l)).cloned().collect();
        // Only a counted loss (a checkpoint pointing into a file deleted since, after a kill)
        // excuses a line that never arrives.
        assert!(
            self.node.recorder.get("dropped") > 0,
            "lines of file {index} (of {}) never arrived and no loss was counted: {:?}",
            self.files.len(),
            missing.iter().map(|l| &l[..20.min(l.len())]).collect::<Vec<_>>()
        );
        self.may_be_lost.extend(missing);
    }

    /// Where rotated file number `number` is (`number` ≥ 1; `.1` is the newest rotated file).
    fn rotated_path(&self, number: usize, compressed: bool) -> PathBuf {
        let path = self.c.rotated(number);
        match compressed {
            true => PathBuf::from(format!("{}.gz", path.display())),
            false => path,
        }
    }

    /// The path of `self.files[i]`, a rotated file.
    fn path_of(&self, index: usize) -> PathBuf {
        self.rotated_path(self.files.len() - 1 - index, self.files[index].compressed)
    }

    /// Docker's rotation (or logrotate's shift before a copy): the oldest beyond MAX_FILE goes.
    fn shift(&mut self) {
        if self.files.len() == MAX_FILE {
            self.drop_oldest();
        }
        let rotated = self.files.len() - 1;
        for n in (1..=rotated).rev() {
            let compressed = self.files[rotated - n].compressed;
            fs::rename(
                self.rotated_path(n, compressed),
                self.rotated_path(n + 1, compressed),
            )
            .unwrap();
        }
    }

    /// Docker's `compress=true`: every rotated file is gzipped (in place, so a look may see it
    /// half written) and the original removed, whether the engine read it yet or not, or even
    /// saw it (then it must be read from its compressed form). A copy made by copy-truncate is
    /// compressed once read, as with logrotate's `delaycompress`: the engine looks for the copy
    /// of a truncated file among uncompressed files only.
    fn compress_rotated(&mut self) {
        for i in 0..self.files.len() - 1 {
            if self.files[i].compressed {
                continue;
            }
            if self.files[i].copy && self.engine.is_some() {
                self.settle(i);
            }
            let plain = self.path_of(i);
            let data = fs::read(&plain).unwrap();
            self.files[i].compressed = true;
            let mut gz = GzEncoder::new(fs::File::create(self.path_of(i)).unwrap(), Compression::fast());
            gz.write_all(&data).unwrap();
            gz.finish().unwrap();
            fs::remove_file(plain).unwrap();
        }
    }

    fn drop_oldest(&mut self) {
        if self.files.len() < 2 || self.files[0].splits_into_next && self.engine.is_none() {
            return;
        }
        match self.engine {
            Some(_) => self.settle(0),
            None => self.may_be_lost.extend(self.files[0].lines.iter().cloned()),
        }
        fs::remove_file(self.path_of(0)).unwrap();
        self.files.remove(0);
    }

    fn rotate(&mut self) {
        if self.files.len() == MAX_FILE && self.files[0].splits_into_next && self.engine.is_none() {
            return;
        }
        self.shift();
        fs::rename(self.c.log(), self.c.rotated(1)).unwrap();
        fs::File::create(self.c.log()).unwrap();
        self.files.push(ModelFile::default());
    }

    fn copy_truncate(&mut self) {
        if self.files.len() == MAX_FILE && self.files[0].splits_into_next {
            return;
        }
        self.shift();
        self.c.copy_truncate();
        self.files.last_mut().expect("invariant: a current file").copy = true;
        self.files.push(ModelFile::default());
    }

    fn split_across_rotation(&mut self) {
        let m = self.line(true);
        let records = docker_records(Stream::Stdout, &m);
        let (first, rest) = records.split_at(records.find('\n').unwrap() + 1);
        self.c.append_raw(first.as_bytes());
        let line = format!("stdout:{m}");
        self.files
            .last_mut()
            .expect("invariant: a current file")
            .lines
            .push(line.clone());
        self.files
            .last_mut()
            .expect("invariant: a current file")
            .splits_into_next = true;
        self.rotate();
        self.c.append_raw(rest.as_bytes());
        self.files
            .last_mut()
            .expect("invariant: a current file")
            .lines
            .push(line.clone());
        self.written.push(line);
    }

    fn apply(&mut self, op: &Op) {
        // With `ENGINE_LOG=sluice_collector=debug,engine_model=debug`, the model's steps show
        // among the engine's own logs.
        tracing::debug!(?op, files = self.files.len(), "model step");
        match *op {
            Op::Write { lines, long, stderr } => self.write(lines, long, stderr),
            Op::SplitAcrossRotation => {
                // Docker never splits a line across a rotation that deletes its first part.
                if !(self.files.len() == MAX_FILE && self.files[0].splits_into_next) {
                    self.split_across_rotation();
                }
            }
            Op::Lifecycle {
                lines,
                seen_empty,
                paused,
                drain_full,
            } => self.lifecycle(lines, seen_empty, paused, drain_full),
            Op::Rotate => self.rotate(),
            Op::CopyTruncate => self.copy_truncate(),
            Op::CompressRotated => self.compress_rotated(),
            Op::DeleteOldest => self.drop_oldest(),
            Op::Restart => {
                graceful_stop(self.engine.take().expect("invariant: running"), &[self.drain]);
                self.start();
            }
            Op::Kill { delete_while_down } => {
                self.kills += 1;
                drop(self.engine.take());
                self.drain.discard_queued();
                self.delivered_before_kills += self.drain.count();
                self.blind_restart |= !self.checkpointed();
                if delete_while_down {
                    // Without any checkpoint yet, the next engine cannot know what it missed.
                    let before = self.may_be_lost.len();
                    self.drop_oldest();
                    self.uncountable |= !self.checkpointed() && self.may_be_lost.len() > before;
                }
                self.start();
            }
        }
    }
}

/// Whether `line` is a proper tail of `written` (same stream).
fn is_tail(line: &str, written: &str) -> bool {
    let (Some((s1, t)), Some((s2, w))) = (line.split_once(':'), written.split_once(':')) else {
        return false;
    };
    s1 == s2 && t.len() < w.len() && w.ends_with(t)
}

/// Whether `line` starts with the first fragment of the (split) line `written` and goes on with
/// something else (same stream).
fn is_joined_head(line: &str, written: &str) -> bool {
    let (Some((s1, t)), Some((s2, w))) = (line.split_once(':'), written.split_once(':')) else {
        return false;
    };
    s1 == s2 && t != w && t.len() > SPLIT && w.len() > SPLIT && t.as_bytes()[..SPLIT] == w.as_bytes()[..SPLIT]
}

fn run_case(ops: &[Op]) -> Result<(), TestCaseError> {
    let node = Node::new();
    let drain = MockDrain::start("a", 3, &node.waker);
    let c = DockerContainer::new(&node.docker_root(), 99);
    tracing::debug!(dir = %node.tmp.path().display(), "model case begins");
    c.append_raw(b"");
    let mut m = Model {
        node: &node,
        drain: &drain,
        c,
        files: vec![ModelFile::default()],
        written: Vec::new(),
        may_be_lost: Vec::new(),
        delivered_before_kills: 0,
        kills: 0,
        uncountable: false,
        blind_restart: false,
        n: 0,
        engine: None,
        others: Vec::new(),
    };
    m.start();
    for op in ops {
        m.apply(op);
    }
    let must: Vec<String> = m
        .written
        .iter()
        .filter(|l| !m.may_be_lost.contains(l))
        .cloned()
        .collect();
    poll(T, || {
        let got = drain.messages();
        must.iter().all(|l| got.contains(l))
    });
    let mut got = drain.messages();
    // After a kill, a checkpoint can point into a file deleted since: the engine counts a loss
    // and starts at the oldest file, whose first fragments may continue a line that began in the
    // deleted file. Such a tail arrives alone; the line it belongs to counts as lost.
    // Likewise a line's first fragment at the end of the oldest file can be joined with the next
    // fragment the engine sees, when the files between were deleted before it listed them: after
    // a restart with no checkpoint, nothing tells it they existed.
    let tails: Vec<String> = got
        .iter()
        .filter(|l| !m.written.contains(l) && m.written.iter().any(|w| is_tail(l, w) || is_joined_head(l, w)))
        .cloned()
        .collect();
    if !tails.is_empty() {
        prop_assert!(
            node.recorder.get("dropped") > 0 || m.blind_restart,
            "a line arrived cut without a loss being counted"
        );
        got.retain(|l| !tails.contains(l));
        let cut: Vec<String> = m
            .written
            .iter()
            .filter(|w| tails.iter().any(|t| is_tail(t, w) || is_joined_head(t, w)))
            .cloned()
            .collect();
        m.may_be_lost.extend(cut);
    }
    let must: Vec<String> = m
        .written
        .iter()
        .filter(|l| !m.may_be_lost.contains(l))
        .cloned()
        .collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &got {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    let missing: Vec<_> = must
        .iter()
        .filter(|l| !counts.contains_key(l.as_str()))
        .map(|l| &l[..20.min(l.len())])
        .collect();
    prop_assert!(
        missing.is_empty(),
        "{} lines lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let unknown: Vec<_> = counts
        .keys()
        .filter(|l| !m.written.iter().any(|w| w == *l))
        .map(|l| &l[..20.min(l.len())])
        .collect();
    prop_assert!(
        unknown.is_empty(),
        "lines never written arrived: {:?}",
        &unknown[..unknown.len().min(5)]
    );
    let repeats: usize = counts.values().map(|n| n - 1).sum();
    if m.kills == 0 {
        prop_assert_eq!(repeats, 0, "no kill, yet lines arrived twice");
    } else {
        println!(
            "{} kill(s): {repeats} repeated lines (bound {})",
            m.kills, m.delivered_before_kills
        );
        prop_assert!(repeats <= m.delivered_before_kills);
    }
    let lost = m
        .written
        .iter()
        .filter(|l| !counts.contains_key(l.as_str()))
        .count();
    if lost > 0 && !m.uncountable {
        // The last engine may still be starting: it counts the loss as it finds its checkpoint.
        prop_assert!(
            poll(T, || node.recorder.get("dropped") > 0),
            "{lost} lines lost without being counted"
        );
    }
    if let Some(engine) = m.engine.take() {
        engine.join();
    }
    Ok(())
}

#[test]
fn tail_engine_matches_the_model() {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48);
    // `MODEL_MAX_OPS` makes longer sequences (default 60).
    let max_ops = std::env::var("MODEL_MAX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        max_shrink_iters: std::env::var("MODEL_SHRINK_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20),
        ..ProptestConfig::default()
    });
    runner
        .run(&prop::collection::vec(op(), 5..max_ops), |ops| run_case(&ops))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Cases the model found once, kept as regressions (each runs its exact sequence).
mod regressions {
    use super::{Op::*, run_case};

    fn w(lines: u8) -> super::Op {
        Write {
            lines,
            long: false,
            stderr: false,
        }
    }

    fn e(lines: u8) -> super::Op {
        Write {
            lines,
            long: false,
            stderr: true,
        }
    }

    fn long(lines: u8, stderr: bool) -> super::Op {
        Write {
            lines,
            long: true,
            stderr,
        }
    }

    /// A container seen with no log file yet (`docker create`), then started, written and
    /// exited while the engine's loop was held still (a stopped collector), was forgotten on a
    /// stale "read to the end" and its lines lost unseen.
    #[test]
    fn container_created_then_run_and_exited_while_the_loop_is_held() {
        run_case(&[
            w(3),
            Lifecycle {
                lines: 50,
                seen_empty: false,
                paused: true,
                drain_full: false,
            },
            w(2),
        ])
        .unwrap();
    }

    /// A container seen with an empty log, written and exited while the drain's channel was
    /// full, was forgotten before its stream read anything.
    #[test]
    fn container_seen_empty_then_run_and_exited_while_the_drain_is_full() {
        run_case(&[
            Lifecycle {
                lines: 40,
                seen_empty: true,
                paused: false,
                drain_full: true,
            },
            w(5),
            Lifecycle {
                lines: 7,
                seen_empty: false,
                paused: true,
                drain_full: true,
            },
        ])
        .unwrap();
    }

    /// The same container lives and exits around restarts and kills: a finished container's
    /// cursor carries it, and nothing is read twice beyond the kill bound.
    #[test]
    fn short_lived_containers_around_restarts_and_kills() {
        run_case(&[
            Lifecycle {
                lines: 20,
                seen_empty: true,
                paused: true,
                drain_full: false,
            },
            Restart,
            Lifecycle {
                lines: 30,
                seen_empty: false,
                paused: false,
                drain_full: true,
            },
            Kill {
                delete_while_down: false,
            },
            w(4),
        ])
        .unwrap();
    }

    // The three below failed when the engine's timing let copy-truncate act between its
    // listing and its opening of the files: they pass on every run now, but only some runs hit
    // the window that failed.

    /// The current file was copied and truncated, and its new lines written, before the engine
    /// first opened it: its old lines were only in the copy, listed before it.
    #[test]
    fn copy_truncate_of_a_file_rewritten_before_it_is_opened() {
        run_case(&[
            Restart,
            DeleteOldest,
            e(9),
            long(12, false),
            CopyTruncate,
            w(33),
            e(4),
            e(3),
            long(39, true),
            CopyTruncate,
            w(27),
            DeleteOldest,
            e(8),
            Rotate,
            DeleteOldest,
            Rotate,
            Rotate,
            CopyTruncate,
            long(5, false),
            w(29),
            e(31),
            CopyTruncate,
            w(20),
        ])
        .unwrap();
    }

    /// A newer file appeared before the engine noticed that the file it was reading had been
    /// truncated in place: the reader must not move past it to the newer file.
    #[test]
    fn truncated_file_sealed_before_its_truncation_is_noticed() {
        run_case(&[
            DeleteOldest,
            CopyTruncate,
            DeleteOldest,
            long(17, true),
            CopyTruncate,
            e(8),
            e(19),
            Rotate,
            w(25),
            Rotate,
            Rotate,
        ])
        .unwrap();
    }

    /// A file truncated in place whose copy was deleted unseen: the new content of its inode,
    /// and the copy of that content listed before it, are new files in that order.
    #[test]
    fn truncated_inode_whose_new_content_was_copied_again() {
        run_case(&[
            Restart,
            e(36),
            Rotate,
            Rotate,
            Rotate,
            e(25),
            CopyTruncate,
            w(16),
            CopyTruncate,
            w(9),
            Rotate,
            Rotate,
            w(28),
            w(9),
            DeleteOldest,
        ])
        .unwrap();
    }

    #[test]
    fn split_line_whose_first_file_is_deleted_then_a_kill() {
        run_case(&[
            w(1),
            SplitAcrossRotation,
            DeleteOldest,
            Kill {
                delete_while_down: false,
            },
            w(3),
            w(1),
            w(1),
        ])
        .unwrap();
    }

    #[test]
    fn kills_restarts_and_rotations_with_long_lines() {
        run_case(&[
            Write {
                lines: 31,
                long: false,
                stderr: true,
            },
            Rotate,
            Write {
                lines: 14,
                long: false,
                stderr: false,
            },
            Write {
                lines: 31,
                long: false,
                stderr: false,
            },
            Kill {
                delete_while_down: false,
            },
            Rotate,
            Write {
                lines: 7,
                long: false,
                stderr: false,
            },
            Write {
                lines: 30,
                long: false,
                stderr: false,
            },
            Write {
                lines: 24,
                long: false,
                stderr: false,
            },
            Kill {
                delete_while_down: false,
            },
            Write {
                lines: 24,
                long: false,
                stderr: true,
            },
            Restart,
            Write {
                lines: 17,
                long: true,
                stderr: false,
            },
            Kill {
                delete_while_down: false,
            },
            DeleteOldest,
            Rotate,
            Restart,
            Write {
                lines: 3,
                long: false,
                stderr: true,
            },
            Write {
                lines: 13,
                long: false,
                stderr: false,
            },
            Rotate,
            Write {
                lines: 18,
                long: false,
                stderr: false,
            },
            Rotate,
            Rotate,
            Write {
                lines: 10,
                long: true,
                stderr: true,
            },
            Write {
                lines: 14,
                long: false,
                stderr: true,
            },
            Write {
                lines: 25,
                long: true,
                stderr: false,
            },
            Rotate,
            Write {
                lines: 39,
                long: false,
                stderr: true,
            },
            Write {
                lines: 21,
                long: false,
                stderr: true,
            },
            DeleteOldest,
            Write {
                lines: 30,
                long: false,
                stderr: true,
            },
            Kill {
                delete_while_down: false,
            },
            Kill {
                delete_while_down: false,
            },
            Rotate,
            Write {
                lines: 33,
                long: true,
                stderr: false,
            },
        ])
        .unwrap();
    }

    /// Files rotated and compressed while a restarted engine had not looked yet, and renamed
    /// again while it did: it saw a newer compressed file before an older one, and read the
    /// older one's lines (the first part of a split line) never.
    #[test]
    fn compressed_files_renamed_while_the_engine_looks() {
        run_case(&[
            SplitAcrossRotation,
            w(5),
            Rotate,
            Kill {
                delete_while_down: true,
            },
            w(11),
            e(31),
            CompressRotated,
            Rotate,
            CopyTruncate,
        ])
        .unwrap();
    }

    /// A rename put another compressed file at a path between the engine's look at it and its
    /// reading: the engine took the other file's (empty) content for it, and never read it.
    #[test]
    fn a_compressed_file_renamed_between_its_look_and_its_reading() {
        run_case(&[
            e(35),
            Rotate,
            CopyTruncate,
            CompressRotated,
            Rotate,
            Rotate,
            Rotate,
            e(5),
            w(7),
            Rotate,
            Rotate,
            CompressRotated,
            CompressRotated,
            e(17),
            Rotate,
            e(34),
            Rotate,
            CompressRotated,
            Restart,
            long(33, true),
            Rotate,
            Kill {
                delete_while_down: true,
            },
            e(11),
            DeleteOldest,
            e(9),
            long(2, true),
            CompressRotated,
            DeleteOldest,
            e(12),
            e(8),
            CompressRotated,
            CompressRotated,
            CompressRotated,
        ])
        .unwrap();
    }

    /// A graceful restart, then every rotated file compressed while the new engine first looks:
    /// its looks had to be taken again while the compression went on, and it took the
    /// checkpointed file for gone, read everything again and counted a loss.
    #[test]
    fn a_restart_while_the_rotated_files_are_compressed() {
        run_case(&[
            e(6),
            long(38, true),
            long(34, false),
            Rotate,
            w(27),
            long(37, true),
            SplitAcrossRotation,
            w(32),
            Rotate,
            w(11),
            Restart,
            CompressRotated,
        ])
        .unwrap();
    }
    /// Found once by the split mix (`MODEL_WEIGHTS=split:3 MODEL_MAX_OPS=80`, 200 cases) on
    /// 8c89965 (files ordered by their first record's time alone): one line of the oldest file
    /// never arrived and no loss was counted. Not reproduced in 9 runs of this sequence since.
    /// The symptom and the mix are those of the reused-inode cases below, whose cause is known
    /// and fixed; most likely this was one of them.
    #[test]
    fn a_long_sequence_of_splits_copies_compressions_and_kills() {
        run_case(&[
            Rotate,
            e(31),
            DeleteOldest,
            CopyTruncate,
            w(29),
            w(33),
            SplitAcrossRotation,
            w(28),
            e(27),
            Rotate,
            e(30),
            SplitAcrossRotation,
            Rotate,
            w(14),
            SplitAcrossRotation,
            SplitAcrossRotation,
            Restart,
            DeleteOldest,
            CopyTruncate,
            CopyTruncate,
            e(10),
            Rotate,
            SplitAcrossRotation,
            w(11),
            e(6),
            long(39, false),
            CompressRotated,
            long(33, false),
            CopyTruncate,
            CompressRotated,
            SplitAcrossRotation,
            Rotate,
            CompressRotated,
            w(34),
            SplitAcrossRotation,
            DeleteOldest,
            w(25),
            DeleteOldest,
            Rotate,
            CompressRotated,
            Restart,
            CompressRotated,
            Kill {
                delete_while_down: false,
            },
            w(24),
            e(5),
            CompressRotated,
            w(4),
            SplitAcrossRotation,
            e(6),
            e(1),
            CompressRotated,
            Rotate,
            SplitAcrossRotation,
            w(36),
            Restart,
            w(16),
            w(2),
            w(31),
            Restart,
            CompressRotated,
            e(8),
            CopyTruncate,
            CompressRotated,
            SplitAcrossRotation,
            SplitAcrossRotation,
            Rotate,
            Kill {
                delete_while_down: true,
            },
            SplitAcrossRotation,
            e(15),
            CompressRotated,
            w(6),
            e(22),
            DeleteOldest,
            SplitAcrossRotation,
            Kill {
                delete_while_down: true,
            },
            Lifecycle {
                lines: 15,
                seen_empty: true,
                paused: false,
                drain_full: true,
            },
            w(4),
        ])
        .unwrap();
    }

    /// Found by the split mix (`MODEL_WEIGHTS=split:4 MODEL_MAX_OPS=80`, 1,000 cases, ten runs at
    /// once beside two builds, load average 30): 20 lines of the oldest file never arrived and
    /// no loss was counted. A new `.gz` got the inode number and the size of one deleted since
    /// the last look and was taken for it (see `engine_compressed`'s
    /// `a_compressed_file_with_the_inode_and_size_of_one_gone_is_read`); shrinking could not
    /// reproduce it, as it depends on which inode the file system hands out.
    #[test]
    fn splits_kills_and_deletions_while_down_under_load() {
        run_case(&[
            SplitAcrossRotation,
            Write {
                lines: 7,
                long: false,
                stderr: false,
            },
            Write {
                lines: 9,
                long: false,
                stderr: false,
            },
            Write {
                lines: 2,
                long: false,
                stderr: false,
            },
            Rotate,
            Kill {
                delete_while_down: true,
            },
            Rotate,
            SplitAcrossRotation,
            Kill {
                delete_while_down: true,
            },
            CompressRotated,
            SplitAcrossRotation,
            Write {
                lines: 32,
                long: false,
                stderr: false,
            },
            SplitAcrossRotation,
            DeleteOldest,
            Write {
                lines: 27,
                long: false,
                stderr: true,
            },
            CopyTruncate,
            Write {
                lines: 20,
                long: false,
                stderr: true,
            },
            Rotate,
            SplitAcrossRotation,
            CopyTruncate,
            CompressRotated,
            Write {
                lines: 11,
                long: false,
                stderr: false,
            },
            SplitAcrossRotation,
            SplitAcrossRotation,
            SplitAcrossRotation,
            SplitAcrossRotation,
            Rotate,
            Write {
                lines: 36,
                long: false,
                stderr: true,
            },
            Rotate,
            SplitAcrossRotation,
            CompressRotated,
            SplitAcrossRotation,
            Kill {
                delete_while_down: false,
            },
            DeleteOldest,
            Kill {
                delete_while_down: false,
            },
            CompressRotated,
            SplitAcrossRotation,
            SplitAcrossRotation,
            DeleteOldest,
            Kill {
                delete_while_down: true,
            },
            Lifecycle {
                lines: 39,
                seen_empty: true,
                paused: false,
                drain_full: true,
            },
            SplitAcrossRotation,
            Kill {
                delete_while_down: true,
            },
            Kill {
                delete_while_down: false,
            },
            SplitAcrossRotation,
            Rotate,
            SplitAcrossRotation,
            Kill {
                delete_while_down: true,
            },
            Write {
                lines: 18,
                long: false,
                stderr: true,
            },
            Write {
                lines: 36,
                long: false,
                stderr: true,
            },
            Rotate,
            Lifecycle {
                lines: 26,
                seen_empty: false,
                paused: false,
                drain_full: false,
            },
            Write {
                lines: 10,
                long: false,
                stderr: true,
            },
            Write {
                lines: 35,
                long: false,
                stderr: true,
            },
            Kill {
                delete_while_down: true,
            },
            CompressRotated,
            Lifecycle {
                lines: 3,
                seen_empty: false,
                paused: false,
                drain_full: true,
            },
            Rotate,
            Write {
                lines: 12,
                long: false,
                stderr: true,
            },
            DeleteOldest,
            DeleteOldest,
            Kill {
                delete_while_down: false,
            },
            Write {
                lines: 33,
                long: true,
                stderr: true,
            },
            Kill {
                delete_while_down: false,
            },
            SplitAcrossRotation,
            Rotate,
            Restart,
            Rotate,
            DeleteOldest,
            SplitAcrossRotation,
            Write {
                lines: 31,
                long: false,
                stderr: false,
            },
            SplitAcrossRotation,
            SplitAcrossRotation,
            SplitAcrossRotation,
            Write {
                lines: 5,
                long: false,
                stderr: false,
            },
            Write {
                lines: 34,
                long: false,
                stderr: false,
            },
            Rotate,
        ])
        .unwrap();
    }

    /// Found by the compress mix (`MODEL_WEIGHTS=compress:4 MODEL_MAX_OPS=80`, same run): one
    /// line of the oldest file never arrived and no loss was counted (the same cause).
    #[test]
    fn compressions_and_short_lived_containers_under_load() {
        run_case(&[
            Restart,
            Restart,
            SplitAcrossRotation,
            CopyTruncate,
            CompressRotated,
            SplitAcrossRotation,
            Write {
                lines: 38,
                long: false,
                stderr: true,
            },
            DeleteOldest,
            Write {
                lines: 8,
                long: true,
                stderr: true,
            },
            Write {
                lines: 36,
                long: false,
                stderr: true,
            },
            CompressRotated,
            Write {
                lines: 21,
                long: true,
                stderr: true,
            },
            Lifecycle {
                lines: 58,
                seen_empty: true,
                paused: false,
                drain_full: true,
            },
            Rotate,
            CompressRotated,
            Write {
                lines: 38,
                long: false,
                stderr: true,
            },
            Write {
                lines: 27,
                long: false,
                stderr: false,
            },
            Write {
                lines: 37,
                long: false,
                stderr: true,
            },
            SplitAcrossRotation,
            SplitAcrossRotation,
            Write {
                lines: 22,
                long: false,
                stderr: true,
            },
            CompressRotated,
            CompressRotated,
            Lifecycle {
                lines: 34,
                seen_empty: false,
                paused: false,
                drain_full: true,
            },
            Write {
                lines: 29,
                long: false,
                stderr: true,
            },
            Write {
                lines: 11,
                long: false,
                stderr: true,
            },
            CompressRotated,
            Lifecycle {
                lines: 10,
                seen_empty: true,
                paused: false,
                drain_full: true,
            },
            CompressRotated,
            Restart,
            CompressRotated,
            CompressRotated,
            Write {
                lines: 10,
                long: false,
                stderr: false,
            },
            Rotate,
            Write {
                lines: 23,
                long: false,
                stderr: false,
            },
            Rotate,
            CompressRotated,
            Lifecycle {
                lines: 39,
                seen_empty: false,
                paused: false,
                drain_full: false,
            },
            Kill {
                delete_while_down: true,
            },
            Write {
                lines: 10,
                long: false,
                stderr: true,
            },
            Write {
                lines: 25,
                long: false,
                stderr: true,
            },
            Rotate,
            Write {
                lines: 36,
                long: true,
                stderr: true,
            },
            Write {
                lines: 14,
                long: true,
                stderr: true,
            },
            CompressRotated,
            Write {
                lines: 38,
                long: false,
                stderr: true,
            },
            CopyTruncate,
            CompressRotated,
            Rotate,
            CompressRotated,
            Write {
                lines: 36,
                long: false,
                stderr: false,
            },
            CopyTruncate,
            Write {
                lines: 17,
                long: false,
                stderr: true,
            },
            Rotate,
            Lifecycle {
                lines: 4,
                seen_empty: true,
                paused: true,
                drain_full: true,
            },
            Kill {
                delete_while_down: false,
            },
            Lifecycle {
                lines: 25,
                seen_empty: true,
                paused: true,
                drain_full: true,
            },
        ])
        .unwrap();
    }

    /// Found by the split mix in the same runs: a line split across a rotation, whose first
    /// part was the whole of a file (rotated at once, then compressed), never arrived and no loss
    /// was counted (the same cause: such files compress to the same size).
    #[test]
    fn a_file_holding_only_the_first_part_of_a_split_line_under_load() {
        run_case(&[
            SplitAcrossRotation,
            CompressRotated,
            CompressRotated,
            Write {
                lines: 28,
                long: false,
                stderr: false,
            },
            Write {
                lines: 19,
                long: false,
                stderr: true,
            },
            Write {
                lines: 5,
                long: true,
                stderr: true,
            },
            Write {
                lines: 24,
                long: true,
                stderr: true,
            },
            SplitAcrossRotation,
            Write {
                lines: 4,
                long: false,
                stderr: false,
            },
            Write {
                lines: 7,
                long: false,
                stderr: false,
            },
            Rotate,
            SplitAcrossRotation,
            SplitAcrossRotation,
            DeleteOldest,
            SplitAcrossRotation,
            CompressRotated,
            SplitAcrossRotation,
            Rotate,
            Write {
                lines: 29,
                long: false,
                stderr: false,
            },
            Restart,
            SplitAcrossRotation,
            Write {
                lines: 16,
                long: false,
                stderr: true,
            },
            SplitAcrossRotation,
            Rotate,
            Rotate,
            Write {
                lines: 34,
                long: true,
                stderr: true,
            },
            Write {
                lines: 32,
                long: false,
                stderr: false,
            },
            Write {
                lines: 5,
                long: false,
                stderr: true,
            },
            Write {
                lines: 11,
                long: false,
                stderr: false,
            },
            Lifecycle {
                lines: 26,
                seen_empty: false,
                paused: true,
                drain_full: false,
            },
            SplitAcrossRotation,
            Write {
                lines: 27,
                long: false,
                stderr: false,
            },
            Write {
                lines: 12,
                long: false,
                stderr: false,
            },
            Restart,
            Write {
                lines: 1,
                long: false,
                stderr: false,
            },
            Write {
                lines: 27,
                long: false,
                stderr: false,
            },
            Write {
                lines: 9,
                long: true,
                stderr: false,
            },
            Rotate,
            CopyTruncate,
            Write {
                lines: 1,
                long: false,
                stderr: true,
            },
            SplitAcrossRotation,
            Write {
                lines: 35,
                long: false,
                stderr: false,
            },
            CompressRotated,
            CompressRotated,
            Write {
                lines: 34,
                long: false,
                stderr: true,
            },
            SplitAcrossRotation,
            Write {
                lines: 31,
                long: false,
                stderr: false,
            },
            Write {
                lines: 11,
                long: true,
                stderr: true,
            },
            Rotate,
            Rotate,
            CompressRotated,
            Rotate,
        ])
        .unwrap();
    }

    /// Found by the compress mix (`MODEL_WEIGHTS=compress:4 MODEL_MAX_OPS=80`, 1,000 cases): one
    /// line never arrived ("1 lines lost"). After a kill the engine re-read from its checkpoint
    /// and held the first fragment of a split line; the file with its rest was truncated in
    /// place and its copy compressed before the engine got to it (a counted loss). The reader
    /// went on to the next file and joined the held fragment to that file's first line, which
    /// so arrived as part of a cut line. It failed only when the engine was slow enough to be
    /// behind at the truncation (about 1 run in 40 with six copies at once). Now the held
    /// fragment is lost with the rest of its file: see `engine_compressed`
    /// `a_held_fragment_whose_rest_was_lost_is_not_joined_to_the_next_line`.
    #[test]
    fn a_held_fragment_is_not_joined_across_a_truncated_file_whose_copy_was_compressed() {
        run_case(&[
            Write {
                lines: 4,
                long: false,
                stderr: false,
            },
            Write {
                lines: 22,
                long: false,
                stderr: true,
            },
            Lifecycle {
                lines: 4,
                seen_empty: false,
                paused: true,
                drain_full: true,
            },
            Restart,
            Rotate,
            CompressRotated,
            Kill {
                delete_while_down: true,
            },
            CopyTruncate,
            Write {
                lines: 7,
                long: false,
                stderr: false,
            },
            Write {
                lines: 38,
                long: false,
                stderr: false,
            },
            Kill {
                delete_while_down: true,
            },
            DeleteOldest,
            CompressRotated,
            Restart,
            CompressRotated,
            DeleteOldest,
            Kill {
                delete_while_down: true,
            },
            CompressRotated,
            Write {
                lines: 12,
                long: false,
                stderr: false,
            },
            Write {
                lines: 34,
                long: false,
                stderr: false,
            },
            Write {
                lines: 33,
                long: false,
                stderr: false,
            },
            Rotate,
            CompressRotated,
            Kill {
                delete_while_down: false,
            },
            CompressRotated,
            Write {
                lines: 27,
                long: true,
                stderr: false,
            },
            Write {
                lines: 3,
                long: false,
                stderr: true,
            },
            DeleteOldest,
            Lifecycle {
                lines: 45,
                seen_empty: false,
                paused: false,
                drain_full: false,
            },
            CompressRotated,
            SplitAcrossRotation,
            Lifecycle {
                lines: 18,
                seen_empty: true,
                paused: true,
                drain_full: true,
            },
            CompressRotated,
            SplitAcrossRotation,
            CompressRotated,
            Kill {
                delete_while_down: false,
            },
            Write {
                lines: 20,
                long: true,
                stderr: false,
            },
            Restart,
            Lifecycle {
                lines: 30,
                seen_empty: false,
                paused: false,
                drain_full: true,
            },
            CompressRotated,
            CompressRotated,
            Write {
                lines: 32,
                long: true,
                stderr: false,
            },
            CopyTruncate,
            CopyTruncate,
            Rotate,
            Write {
                lines: 34,
                long: false,
                stderr: false,
            },
            Restart,
            Rotate,
            CompressRotated,
            CompressRotated,
            Write {
                lines: 14,
                long: false,
                stderr: true,
            },
            Kill {
                delete_while_down: true,
            },
            SplitAcrossRotation,
            CompressRotated,
            Write {
                lines: 10,
                long: false,
                stderr: true,
            },
            Write {
                lines: 9,
                long: false,
                stderr: true,
            },
            Lifecycle {
                lines: 20,
                seen_empty: true,
                paused: true,
                drain_full: true,
            },
            Kill {
                delete_while_down: true,
            },
            Lifecycle {
                lines: 6,
                seen_empty: true,
                paused: true,
                drain_full: true,
            },
            CompressRotated,
            CopyTruncate,
            CompressRotated,
            Rotate,
            Rotate,
            CompressRotated,
            Write {
                lines: 39,
                long: false,
                stderr: false,
            },
            Rotate,
            Write {
                lines: 18,
                long: false,
                stderr: true,
            },
            Write {
                lines: 34,
                long: false,
                stderr: false,
            },
            Write {
                lines: 3,
                long: false,
                stderr: true,
            },
            Rotate,
            DeleteOldest,
        ])
        .unwrap();
    }
}
