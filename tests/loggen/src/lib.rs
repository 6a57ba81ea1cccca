//! Deterministic log lines for sluice's tests and benchmarks.
//!
//! Every line is a pure function of a [`LineSpec`] and a sequence number, so a test can compute
//! the exact multiset of lines a generator wrote without reading anything back. A line looks like
//! `<tag> <seq> <padding>`: the tag names the generator, the zero-padded sequence number makes the
//! line unique within it, and the padding (printable ASCII letters and digits, no spaces) brings
//! it to a length chosen deterministically between `min` and `max` bytes.
//!
//! Invariants:
//! * `LineSpec::line(seq)` never contains `\n` or `\r`, and its length is exactly
//!   [`LineSpec::len_of`]`(seq)`;
//! * two different `(tag, seq)` pairs never give the same line (as long as no tag contains a space);
//! * the crate has no dependencies, so the `loggen` binary links statically into `FROM scratch`
//!   images.

pub mod json_file;

/// Which output stream a line goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`, as Docker writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// What lines a generator writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineSpec {
    /// The first word of every line; identifies the generator (no spaces).
    pub tag: String,
    /// Shortest ordinary line, in bytes (raised to fit the tag and sequence number if needed).
    pub min: usize,
    /// Longest ordinary line, in bytes.
    pub max: usize,
    /// Every `stderr_every`-th line (seq % k == k-1) goes to stderr; 0 means never.
    pub stderr_every: u64,
    /// Every `long_every`-th line (seq % k == k-1) is `long_bytes` long; 0 means never.
    pub long_every: u64,
    /// The length of the long lines.
    pub long_bytes: usize,
}

impl LineSpec {
    /// A spec with ordinary lines of `min..=max` bytes, all on stdout.
    pub fn new(tag: impl Into<String>, min: usize, max: usize) -> Self {
        Self {
            tag: tag.into(),
            min,
            max: max.max(min),
            stderr_every: 0,
            long_every: 0,
            long_bytes: 0,
        }
    }

    /// The stream line `seq` goes to.
    pub fn stream(&self, seq: u64) -> Stream {
        if self.stderr_every > 0 && seq % self.stderr_every == self.stderr_every - 1 {
            Stream::Stderr
        } else {
            Stream::Stdout
        }
    }

    /// The length of line `seq` (before the prefix is taken into account).
    pub fn len_of(&self, seq: u64) -> usize {
        let prefix = self.tag.len() + 1 + digits(seq) + 1;
        let wanted = if self.long_every > 0 && seq % self.long_every == self.long_every - 1 {
            self.long_bytes
        } else {
            let span = (self.max - self.min) as u64 + 1;
            self.min + (mix(seq ^ tag_hash(&self.tag)) % span) as usize
        };
        wanted.max(prefix)
    }

    /// Line `seq`, without a line terminator.
    pub fn line(&self, seq: u64) -> String {
        let len = self.len_of(seq);
        let mut line = String::with_capacity(len);
        self.write_line(seq, &mut line);
        line
    }

    /// Append line `seq` to `out` (no terminator).
    pub fn write_line(&self, seq: u64, out: &mut String) {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let len = self.len_of(seq);
        let start = out.len();
        out.push_str(&self.tag);
        out.push(' ');
        out.push_str(&format!("{seq:08}"));
        out.push(' ');
        // Padding: a cheap deterministic walk through the alphabet, different for each line.
        let mut state = mix(seq.wrapping_add(tag_hash(&self.tag)));
        while out.len() - start < len {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            out.push(ALPHABET[(state >> 58) as usize % ALPHABET.len()] as char);
        }
    }
}

/// Number of digits the sequence number takes (at least 8: it is zero-padded).
fn digits(seq: u64) -> usize {
    let mut n = 1;
    let mut v = seq / 10;
    while v > 0 {
        n += 1;
        v /= 10;
    }
    n.max(8)
}

/// splitmix64's finalizer: a good, cheap bit mixer.
fn mix(mut state: u64) -> u64 {
    state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    state = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    state = (state ^ (state >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    state ^ (state >> 31)
}

/// FNV-1a of the tag, so different generators pick different lengths and padding.
fn tag_hash(tag: &str) -> u64 {
    tag.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Parse `MIN..MAX` (or a single number) into an inclusive range.
pub fn parse_range(text: &str) -> Result<(usize, usize), String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<usize>()
            .map_err(|_| format!("{s:?} is not a number"))
    };
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b.trim_start_matches('='))?);
            if a > b {
                return Err(format!("range {text:?} is empty (MIN > MAX)"));
            }
            Ok((a, b))
        }
        None => parse(text).map(|n| (n, n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_deterministic_unique_and_sized() {
        let mut spec = LineSpec::new("web", 20, 60);
        spec.long_every = 5;
        spec.long_bytes = 40_000;
        spec.stderr_every = 3;
        let mut seen = std::collections::HashSet::new();
        for seq in 0..1000 {
            let line = spec.line(seq);
            assert_eq!(line, spec.line(seq));
            assert_eq!(line.len(), spec.len_of(seq));
            assert!(line.starts_with(&format!("web {seq:08} ")));
            assert!(!line.contains('\n'));
            assert!(seen.insert(line.clone()));
            if seq % 5 == 4 {
                assert_eq!(line.len(), 40_000);
            } else {
                assert!((20..=60).contains(&line.len()), "{}", line.len());
            }
        }
        assert_eq!(spec.stream(2), Stream::Stderr);
        assert_eq!(spec.stream(3), Stream::Stdout);
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("10..20"), Ok((10, 20)));
        assert_eq!(parse_range("10..=20"), Ok((10, 20)));
        assert_eq!(parse_range("7"), Ok((7, 7)));
        assert!(parse_range("9..3").is_err());
        assert!(parse_range("x").is_err());
    }
}
