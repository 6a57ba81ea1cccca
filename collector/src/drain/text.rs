//! Small allocation-free text helpers shared by the encoders.
//!
//! Invariants: nothing here allocates; every function is total (bad input gives a documented
//! fallback, never a panic).

use crate::pipeline::MsgId;

/// A [`MsgId`] rendered into a stack buffer, exactly as its `Display` renders it.
pub struct MsgIdHex {
    buf: [u8; 32],
    len: usize,
}

impl MsgIdHex {
    /// Render `id`: 16 hex digits of the file digest, then the offset in hex without leading zeros.
    pub fn new(id: MsgId) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 32];
        for (i, slot) in buf[..16].iter_mut().enumerate() {
            *slot = HEX[((id.file >> (60 - 4 * i)) & 0xf) as usize];
        }
        let digits = if id.offset == 0 {
            1
        } else {
            (67 - id.offset.leading_zeros() as usize) / 4
        };
        for i in 0..digits {
            buf[16 + i] = HEX[((id.offset >> (4 * (digits - 1 - i))) & 0xf) as usize];
        }
        Self {
            buf,
            len: 16 + digits,
        }
    }

    /// The hex digits.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// An RFC3339 timestamp with its fraction cut to at most 6 digits, as (before the cut, the zone).
/// Anything that is not printable ASCII without spaces gives the NILVALUE `-`.
pub fn cut_timestamp(ts: &str) -> (&str, &str) {
    if ts.is_empty() || !ts.bytes().all(|b| (33..=126).contains(&b)) {
        return ("-", "");
    }
    let Some(dot) = ts.find('.') else { return (ts, "") };
    let frac = ts[dot + 1..].bytes().take_while(u8::is_ascii_digit).count();
    let zone = &ts[dot + 1 + frac..];
    match frac {
        0 => (&ts[..dot], zone),
        _ => (&ts[..dot + 1 + frac.min(6)], zone),
    }
}

/// The largest index ≤ `at` that is a UTF-8 character boundary of `text`.
pub fn floor_char_boundary(text: &[u8], at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at).rev().find(|&i| text[i] & 0xc0 != 0x80).unwrap_or(0)
}

/// The length in bytes of the first character of `text` (0 when empty).
pub fn first_char_len(text: &[u8]) -> usize {
    (1..=text.len())
        .find(|&i| i == text.len() || text[i] & 0xc0 != 0x80)
        .unwrap_or(0)
}

/// Append `text` as a JSON string (with its quotes), escaping quotes, backslashes and control
/// characters; everything else (including non-ASCII) is copied as is, which JSON allows.
pub fn json_string(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    // Copy runs that need no escaping in one go; stop at each byte that does.
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgid_matches_display() {
        for (file, offset) in [
            (0, 0),
            (0xab, 0x10),
            (u64::MAX, u64::MAX),
            (1, 0xf),
            (7, 0x100),
            (9, 1 << 63),
        ] {
            let id = MsgId { file, offset };
            assert_eq!(
                std::str::from_utf8(MsgIdHex::new(id).as_bytes()).unwrap(),
                id.to_string()
            );
        }
    }

    #[test]
    fn timestamps_are_cut_to_microseconds() {
        let cases = [
            ("2026-11-21T15:15:34.165439785Z", "2026-11-21T15:15:34.165439Z"),
            ("2026-11-21T15:15:34.1Z", "2026-11-21T15:15:34.1Z"),
            (
                "2026-11-21T15:15:34.123456789+01:00",
                "2026-11-21T15:15:34.123456+01:00",
            ),
            ("2026-11-21T15:15:34Z", "2026-11-21T15:15:34Z"),
            ("2026-11-21T15:15:34.Z", "2026-11-21T15:15:34Z"),
            ("", "-"),
            ("2026 11", "-"),
        ];
        for (input, want) in cases {
            let (a, b) = cut_timestamp(input);
            assert_eq!(format!("{a}{b}"), want, "{input}");
        }
    }

    #[test]
    fn char_boundaries() {
        let text = "aé€".as_bytes(); // 1 + 2 + 3 bytes
        assert_eq!(floor_char_boundary(text, 2), 1);
        assert_eq!(floor_char_boundary(text, 3), 3);
        assert_eq!(floor_char_boundary(text, 5), 3);
        assert_eq!(floor_char_boundary(text, 99), 6);
        assert_eq!(first_char_len("€x".as_bytes()), 3);
        assert_eq!(first_char_len(b""), 0);
    }

    #[test]
    fn json_escaping() {
        let cases = [
            ("plain", r#""plain""#),
            ("q\"b\\s", r#""q\"b\\s""#),
            ("a\nb\rc\td\u{8}e\u{c}", r#""a\nb\rc\td\be\f""#),
            ("\u{1}\u{1f}\u{7f}", "\"\\u0001\\u001f\u{7f}\""),
            ("日本 ü €", "\"日本 ü €\""),
        ];
        for (input, want) in cases {
            let mut out = Vec::new();
            json_string(input, &mut out);
            assert_eq!(String::from_utf8(out.clone()).unwrap(), want);
            let back: String = serde_json::from_slice(&out).unwrap();
            assert_eq!(back, input);
        }
    }
}
