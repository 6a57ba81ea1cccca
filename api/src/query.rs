//! The collector's query API, as the operator calls it (see the collector's `query` module):
//! `GET /v1/recent` and `GET /v1/follow` answer JSON lines, one [`RecentLine`] each (a follow
//! may also send `{"lagged":N}` for N lines it lost), to a request carrying the token the operator
//! and the collectors share ([`TOKEN_KEY`] of the Secret [`TOKEN_SECRET`] in the sluice namespace).

use serde::{Deserialize, Serialize};

/// The Secret (in the sluice namespace) holding the query token.
pub const TOKEN_SECRET: &str = "sluice-query-token";
/// The key of the token in [`TOKEN_SECRET`].
pub const TOKEN_KEY: &str = "token";
/// The path of a recent-lines dump.
pub const RECENT_PATH: &str = "/v1/recent";
/// The path of a follow.
pub const FOLLOW_PATH: &str = "/v1/follow";
/// The annotation of a collector's node Lease saying where its query API answers (`IP:PORT`);
/// the operator finds the collectors to ask through it, on Leases that are not expired.
pub const ADDRESS_ANNOTATION: &str = "sluice.dev/query-address";

/// One line as the query API returns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentLine {
    /// The runtime's timestamp (RFC3339, as in the log file).
    pub time: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The message.
    pub line: String,
}

/// Percent-encoding of a query value: everything but RFC 3986's unreserved characters.
pub fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decoding of a query value (`+` is a space); `None` for a bad escape or bytes that are
/// not UTF-8.
pub fn decode_component(value: &str) -> Option<String> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// The `key=value` pairs of a query string, decoded; an error names the pair that is not.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = decode_component(key).ok_or_else(|| format!("{key}: bad percent-encoding"))?;
            let value = decode_component(value).ok_or_else(|| format!("{key}: bad percent-encoding"))?;
            Ok((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_round_trip() {
        for text in ["plain", "a b&c=d", "2026-01-01T00:00:00+01:00", "ünï/cøde%"] {
            assert_eq!(decode_component(&encode_component(text)).as_deref(), Some(text));
        }
        assert_eq!(encode_component("a:b+c"), "a%3Ab%2Bc");
        assert_eq!(decode_component("a+b").as_deref(), Some("a b"));
        assert_eq!(decode_component("%zz"), None);
        assert_eq!(decode_component("%4"), None);
        assert_eq!(
            query_pairs("pod=a&pod=b%20c&watch").unwrap(),
            [("pod", "a"), ("pod", "b c"), ("watch", "")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }
}
