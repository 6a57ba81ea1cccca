//! The age order of a container's files, by something renames, copies and compression keep: the
//! time of a file's first record. Both runtimes stamp every record (CRI lines start with the
//! time, Docker's json-file records carry a `time`), with a clock that moves on between two
//! records, so a rotated file's first record is older than the first record of every file
//! rotated after it, whatever name it has now, and whether it was copied or compressed.
//!
//! Invariants:
//! * a compressed file's content, inflated, is numbered between the known files whose first
//!   records are older and newer than its own;
//! * a file on disk that the listing puts before a known file (found late: a listing taken
//!   during a rename missed it) goes before the oldest known file with a newer first record if
//!   that is earlier; a file the listing puts after every other is the newest, whatever its
//!   time says (a clock stepped back at a rotation must not put a new file before the old);
//! * where the time does not decide (no readable time, or a known file whose first record has
//!   the same time), the listing's order does.

use std::fs::File;

use super::FileSet;
use crate::engine::{
    identity,
    parse::{self, Format, Scratch},
};

/// The time of the first record of the open `file` (see [`first_record_time`]).
pub fn file_first_time(file: &File) -> Option<i128> {
    let (head, _) = identity::read_first_line(file).ok()?;
    first_record_time(&head)
}

/// The time of a file's first record, in nanoseconds since the Unix epoch, from its `head` (its
/// first line): `None` when the head is not a whole CRI or Docker json-file record.
pub fn first_record_time(head: &[u8]) -> Option<i128> {
    let line = head.strip_suffix(b"\n")?;
    let mut scratch = Scratch::default();
    [Format::Cri, Format::Docker]
        .into_iter()
        .find_map(|format| {
            parse::parse(format, line, &mut scratch)
                .ok()
                .map(|f| f.time.to_owned())
        })
        .and_then(|time| rfc3339_nanos(&time))
}

/// An RFC 3339 time (`2026-11-21T15:15:34.165439785Z`, any number of fraction digits up to nine,
/// `Z` or an offset) in nanoseconds since the Unix epoch.
pub fn rfc3339_nanos(text: &str) -> Option<i128> {
    let b = text.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let digits = b.get(from..to)?;
        digits.iter().all(u8::is_ascii_digit).then_some(())?;
        digits
            .iter()
            .try_fold(0i64, |n, d| Some(n * 10 + i64::from(d - b'0')))
    };
    let sep = |at: usize, one_of: &[u8]| b.get(at).is_some_and(|c| one_of.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0i64;
    if sep(at, b".") {
        let digits = b[at + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(at + 1, at + 1 + digits)? * 10i64.pow(9 - digits as u32);
        at += 1 + digits;
    }
    let offset_seconds = match b.get(at..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let minutes = num(at + 1, at + 3)? * 60 + num(at + 4, at + 6)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_seconds;
    Some(i128::from(seconds) * 1_000_000_000 + i128::from(nanos))
}

/// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (eras of 400
/// years of 146,097 days; the year counted from March, so the leap day ends it).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

impl FileSet {
    /// Where a new file whose first record was written at `time` goes by that time: before the
    /// oldest known file with a newer first record (`Some(None)`: after every file). `None` when
    /// the time does not decide (unknown, equal to a known file's, or newer than every file that
    /// has one while some file has none); then the listing's order does.
    pub(super) fn placed_by_time(&self, time: Option<i128>) -> Option<Option<u64>> {
        let time = time?;
        if self.files.iter().any(|f| f.first_time == Some(time)) {
            return None;
        }
        match self.files.iter().find(|f| f.first_time.is_some_and(|t| t > time)) {
            Some(f) => Some(Some(f.seq)),
            None if self.files.iter().any(|f| f.first_time.is_none()) => None,
            None => Some(None),
        }
    }

    /// The sequence number of a new file on disk whose first record was written at `time`, that
    /// the listing puts before the known file `listed_before` (`None`: after every file). The
    /// time moves a file found late before older files the listing could not place it against,
    /// never after where the listing puts it: a file the listing shows as the newest is the
    /// newest, even if the clock stepped back at its rotation.
    pub(super) fn seq_for_new(&mut self, time: Option<i128>, listed_before: Option<u64>) -> u64 {
        let before = match (listed_before, self.placed_by_time(time)) {
            (Some(listed), Some(Some(by_time))) => Some(listed.min(by_time)),
            (listed, _) => listed,
        };
        self.seq_for(before)
    }

    /// The sequence number of a compressed file's content, inflated, whose first record was
    /// written at `time`: by that time where it decides (the listing has no place for it among
    /// the files on disk), else as `by_listing` says.
    pub(super) fn seq_for_inflated(
        &mut self,
        time: Option<i128>,
        by_listing: impl FnOnce(&mut Self) -> u64,
    ) -> u64 {
        match self.placed_by_time(time) {
            Some(before) => self.seq_for(before),
            None => by_listing(self),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_nanoseconds_since_the_epoch() {
        let cases: &[(&str, Option<i128>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01T00:00:01.5Z", Some(1_500_000_000)),
            ("2000-03-01T00:00:00Z", Some(951_868_800_000_000_000)),
            ("2026-11-21T15:15:34.165439785Z", Some(1_795_274_134_165_439_785)),
            // Go trims trailing zeros: fewer digits are the same time.
            ("2026-11-21T15:15:34.16543978Z", Some(1_795_274_134_165_439_780)),
            (
                "2026-11-21T16:15:34.165439785+01:00",
                Some(1_795_274_134_165_439_785),
            ),
            (
                "2026-11-21T14:45:34.165439785-00:30",
                Some(1_795_274_134_165_439_785),
            ),
            ("2026-11-21T15:15:34.1654397851Z", None),
            ("2026-11-21T15:15:34.Z", None),
            ("2026-13-21T15:15:34Z", None),
            ("2026-11-21 15:15:34", None),
            ("garbage", None),
            ("", None),
        ];
        for &(text, want) in cases {
            assert_eq!(rfc3339_nanos(text), want, "{text}");
        }
    }

    #[test]
    fn the_first_record_of_either_runtime() {
        let cri = b"2026-11-21T15:15:34.000000002Z stdout F hello\n";
        let docker = br#"{"log":"hello\n","stream":"stderr","time":"2026-11-21T15:15:34.000000002Z"}"#;
        let docker = [&docker[..], b"\n"].concat();
        let want = Some(1_795_274_134_000_000_002);
        assert_eq!(first_record_time(cri), want);
        assert_eq!(first_record_time(&docker), want);
        // Not a whole line, or not a record: no time.
        assert_eq!(first_record_time(&cri[..20]), None);
        assert_eq!(first_record_time(b"not a record\n"), None);
    }
}
