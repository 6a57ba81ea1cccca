//! Table-driven parser tests: every Docker and CRI shape the engine meets, and bad input of every
//! kind.

use sluice_api::node_config::Stream::{self, Stderr, Stdout};

use super::{Bad, Format, Scratch, parse};

/// (stream, time, message, partial, replaced)
type Want = (Stream, &'static str, &'static [u8], bool, bool);

fn check(format: Format, cases: &[(&[u8], Result<Want, Bad>)]) {
    for (line, want) in cases {
        let mut scratch = Scratch::default();
        let got = parse(format, line, &mut scratch)
            .map(|f| (f.stream, f.time.to_owned(), f.log.to_vec(), f.partial, f.replaced));
        let want = want.map(|(s, t, l, p, r)| (s, t.to_owned(), l.to_vec(), p, r));
        assert_eq!(got, want, "line {:?}", String::from_utf8_lossy(line));
    }
}

const T: &str = "2026-11-21T15:15:34.165439785Z";

#[test]
fn docker_shapes() {
    check(
        Format::Docker,
        &[
            (br#"{"log":"hello\n","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, b"hello", false, false))),
            (br#"{"log":"oops\n","stream":"stderr","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stderr, T, b"oops", false, false))),
            // A 16 KiB split: no trailing newline.
            (br#"{"log":"part","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, b"part", true, false))),
            (br#"{"log":"\n","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, b"", false, false))),
            (br#"{"log":"","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, b"", true, false))),
            // Other key order, attrs, whitespace: the serde path.
            (br#"{"stream":"stdout","time":"2026-11-21T15:15:34.165439785Z","log":"x\n"}"#, Ok((Stdout, T, b"x", false, false))),
            (br#"{"log":"x\n","stream":"stdout","attrs":{"a":"b"},"time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, b"x", false, false))),
            (br#"{ "log" : "x\n" , "stream" : "stderr" , "time" : "2026-11-21T15:15:34.165439785Z" }"#, Ok((Stderr, T, b"x", false, false))),
            (br#"{"log":"x\n","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z","attrs":{"k":"v"}}"#, Ok((Stdout, T, b"x", false, false))),
        ],
    );
}

#[test]
fn docker_escapes() {
    check(
        Format::Docker,
        &[
            (br#"{"log":"a\tb\"c\\d\/e\r\b\f\n","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, b"a\tb\"c\\d/e\r\x08\x0c", false, false))),
            (br#"{"log":"line\nwith\nnewlines\n","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, b"line\nwith\nnewlines", false, false))),
            (br#"{"log":"\u00e9\u003c\u2603\n","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, "é<☃".as_bytes(), false, false))),
            // A surrogate pair, and lone surrogates (replaced and reported).
            (br#"{"log":"\ud83d\ude00\n","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, "😀".as_bytes(), false, false))),
            (br#"{"log":"\ud83dx\n","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, "\u{fffd}x".as_bytes(), false, true))),
            (br#"{"log":"\ude00\n","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, "\u{fffd}".as_bytes(), false, true))),
            (br#"{"log":"\ud83d\u0041\n","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, "\u{fffd}A".as_bytes(), false, true))),
            (br#"{"log":"tail\\","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#, Ok((Stdout, T, b"tail\\", true, false))),
            // UTF-8 passes through untouched.
            ("{\"log\":\"grüße\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-21T15:15:34.165439785Z\"}".as_bytes(), Ok((Stdout, T, "grüße".as_bytes(), false, false))),
        ],
    );
}

#[test]
fn docker_bad_input() {
    check(
        Format::Docker,
        &[
            (b"", Err(Bad::MalformedJson)),
            (b"not json at all", Err(Bad::MalformedJson)),
            (br#"{"log":"unterminated"#, Err(Bad::MalformedJson)),
            (
                br#"{"log":"x\n","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z""#,
                Err(Bad::MalformedJson),
            ),
            (
                br#"{"log":"x\n","stream":"stdin","time":"2026-11-21T15:15:34.165439785Z"}"#,
                Err(Bad::MalformedJson),
            ),
            (
                br#"{"log":"bad \q escape","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#,
                Err(Bad::MalformedJson),
            ),
            (
                br#"{"log":"\u12","stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#,
                Err(Bad::MalformedJson),
            ),
            (
                br#"{"log":42,"stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#,
                Err(Bad::MalformedJson),
            ),
            (
                br#"{"stream":"stdout","time":"2026-11-21T15:15:34.165439785Z"}"#,
                Err(Bad::MalformedJson),
            ),
            (b"\x00\x01\x02\xff\xfe garbage", Err(Bad::MalformedJson)),
        ],
    );
}

#[test]
fn docker_invalid_utf8_is_kept_for_the_caller_or_replaced() {
    // The fast path leaves raw bytes for the caller to validate once per joined line.
    let line = b"{\"log\":\"a\xffb\\n\",\"stream\":\"stdout\",\"time\":\"2026-11-21T15:15:34.165439785Z\"}";
    let mut scratch = Scratch::default();
    let f = parse(Format::Docker, line, &mut scratch).unwrap();
    assert_eq!((f.log, f.partial), (&b"a\xffb"[..], false));
    // The serde path replaces the bad bytes and says so.
    let line = b"{\"stream\":\"stdout\",\"log\":\"a\xffb\\n\",\"time\":\"2026-11-21T15:15:34.165439785Z\"}";
    let f = parse(Format::Docker, line, &mut scratch).unwrap();
    assert_eq!((f.log, f.replaced), ("a\u{fffd}b".as_bytes(), true));
}

#[test]
fn cri_shapes_and_bad_input() {
    check(
        Format::Cri,
        &[
            (
                b"2026-11-21T15:15:34.165439785Z stdout F hello world",
                Ok((Stdout, T, b"hello world", false, false)),
            ),
            (
                b"2026-11-21T15:15:34.165439785Z stderr P part one ",
                Ok((Stderr, T, b"part one ", true, false)),
            ),
            (
                b"2026-11-21T15:15:34.165439785Z stdout F ",
                Ok((Stdout, T, b"", false, false)),
            ),
            (
                b"2026-11-21T15:15:34.165439785Z stdout F",
                Ok((Stdout, T, b"", false, false)),
            ),
            (
                b"2026-11-21T15:15:34.165439785Z stdout F:x:y tagged",
                Ok((Stdout, T, b"tagged", false, false)),
            ),
            (
                b"2026-11-21T15:15:34.165439785Z stdout F raw \xff bytes",
                Ok((Stdout, T, b"raw \xff bytes", false, false)),
            ),
            (b"", Err(Bad::MalformedCri)),
            (b"garbage", Err(Bad::MalformedCri)),
            (b" stdout F x", Err(Bad::MalformedCri)),
            (
                b"2026-11-21T15:15:34.165439785Z stdin F x",
                Err(Bad::MalformedCri),
            ),
            (
                b"2026-11-21T15:15:34.165439785Z stdout X x",
                Err(Bad::MalformedCri),
            ),
            (b"\xff\xfe stdout F x", Err(Bad::MalformedCri)),
        ],
    );
}
