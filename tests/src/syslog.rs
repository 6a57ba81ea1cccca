//! Real syslog receivers (rsyslog, syslog-ng) and what they parsed.
//!
//! Both receivers listen on 127.0.0.1 with TCP (RFC6587 octet counting), TLS (RFC5425, with a
//! server certificate from a CA this module generates with the `openssl` CLI) and UDP (RFC5426),
//! accept messages of up to [`MAX_MESSAGE_BYTES`], and write one JSON object per message to an
//! output file: `{"app":…,"host":…,"procid":…,"msgid":…,"sd":…,"msg":…}`, the fields as the
//! receiver's own RFC5424 parser saw them. [`Received::parse_file`] reads that file back.
//!
//! Invariant: the receivers never write a message partially: a line of the output file that is
//! not complete JSON yet (the receiver is mid-write) is ignored until it is.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::support::run;

mod rsyslog;
mod syslog_ng;

pub use rsyslog::Rsyslog;
pub use syslog_ng::SyslogNg;

/// The largest message the receivers accept.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The ports a receiver listens on.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// TCP, octet-counted.
    pub tcp: u16,
    /// TLS, octet-counted.
    pub tls: u16,
    /// UDP.
    pub udp: u16,
}

impl Ports {
    /// Fresh free ports.
    pub fn free() -> Self {
        use crate::support::{free_port, free_udp_port};
        Self {
            tcp: free_port(),
            tls: free_port(),
            udp: free_udp_port(),
        }
    }
}

/// One message as a receiver parsed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// APP-NAME (`-` as empty).
    pub app: String,
    /// HOSTNAME.
    pub host: String,
    /// PROCID.
    pub procid: String,
    /// MSGID.
    pub msgid: String,
    /// STRUCTURED-DATA: SD-ID → (PARAM-NAME → value).
    pub sd: BTreeMap<String, BTreeMap<String, String>>,
    /// MSG.
    pub msg: String,
}

impl Received {
    /// Parse every complete line of a receiver's output file (a missing file is empty).
    pub fn parse_file(path: &Path) -> Vec<Received> {
        let text = fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| Self::from_json(&v))
            .collect()
    }

    fn from_json(value: &serde_json::Value) -> Self {
        let field = |name: &str| {
            let s = value.get(name).and_then(|s| s.as_str()).unwrap_or_default();
            if s == "-" { String::new() } else { s.to_owned() }
        };
        Received {
            app: field("app"),
            host: field("host"),
            procid: field("procid"),
            msgid: field("msgid"),
            sd: parse_structured_data(&field("sd")),
            msg: field("msg"),
        }
    }

    /// A parameter of the structured data (searching every element).
    pub fn sd_param(&self, name: &str) -> Option<&str> {
        self.sd
            .values()
            .find_map(|params| params.get(name))
            .map(String::as_str)
    }
}

/// Parse RFC5424 STRUCTURED-DATA (`[id k="v" …][id2 …]`, with `\"`, `\\`, `\]` escapes).
pub fn parse_structured_data(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = text.chars().peekable();
    // Walk element by element: `[`, the SD-ID up to a space or `]`, then `name="value"` pairs.
    while let Some(c) = chars.next() {
        if c != '[' {
            continue;
        }
        let mut id = String::new();
        while let Some(&c) = chars.peek() {
            if c == ' ' || c == ']' {
                break;
            }
            id.push(c);
            chars.next();
        }
        let mut params = BTreeMap::new();
        loop {
            match chars.next() {
                None | Some(']') => break,
                Some(' ') => {}
                Some(first) => {
                    let mut name = String::from(first);
                    for c in chars.by_ref() {
                        if c == '=' {
                            break;
                        }
                        name.push(c);
                    }
                    chars.next(); // the opening quote
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => value.extend(chars.next()),
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    params.insert(name, value);
                }
            }
        }
        out.insert(id, params);
    }
    out
}

/// A throw-away CA and a server certificate for 127.0.0.1 / localhost, made with `openssl`.
#[derive(Clone, Debug)]
pub struct Certs {
    /// The CA certificate (PEM); what the collector's `tls.caFile` points at.
    pub ca: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
}

impl Certs {
    /// Generate into `dir`.
    pub fn generate(dir: &Path) -> Result<Self> {
        let p = |name: &str| dir.join(name);
        let openssl = || {
            let mut c = Command::new("openssl");
            c.current_dir(dir);
            c
        };
        run(openssl()
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"])
            .args([
                "-subj",
                "/CN=sluice test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ]))?;
        run(openssl()
            .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost"])
            .args(["-keyout", "server.key", "-out", "server.csr"]))?;
        fs::write(
            p("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )?;
        run(openssl()
            .args([
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
            ])
            .args([
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
                "-out",
                "server.pem",
            ]))?;
        Ok(Self {
            ca: p("ca.pem"),
            cert: p("server.pem"),
            key: p("server.key"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_data_parses_with_escapes() {
        let sd = parse_structured_data(r#"[kubernetes@32473 pod="web-1" msg="a \"b\" c\]\\"][x@1 k="v"]"#);
        assert_eq!(sd["kubernetes@32473"]["pod"], "web-1");
        assert_eq!(sd["kubernetes@32473"]["msg"], r#"a "b" c]\"#);
        assert_eq!(sd["x@1"]["k"], "v");
        assert!(parse_structured_data("-").is_empty());
    }
}
