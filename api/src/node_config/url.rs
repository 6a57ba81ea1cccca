//! Drain URLs: which kind of drain a URL names, and its address.

/// What a drain URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DrainKind {
    /// RFC5424 over TCP with octet counting (`syslog://`).
    SyslogTcp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// RFC5425: RFC5424 over TLS with octet counting (`syslog-tls://`).
    SyslogTls {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// RFC5426: RFC5424 over UDP (`syslog-udp://`).
    SyslogUdp {
        /// Host name or address.
        host: String,
        /// Port.
        port: u16,
    },
    /// Batched JSON lines over HTTP(S) POST (`http://`, `https://`).
    Http {
        /// The full URL.
        url: String,
        /// Whether it is `https://`.
        tls: bool,
    },
}

impl DrainKind {
    /// Parse a drain URL, saying precisely what is wrong when it does not parse.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not a URL (expected scheme://host:port)"))?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err("credentials do not belong in the URL; use the drain's credential settings".into());
        }
        let host_port = |default: Option<u16>| -> Result<(String, u16), String> {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                    h,
                    Some(
                        p.parse::<u16>()
                            .map_err(|_| format!("port {p:?} is not a number 1-65535"))?,
                    ),
                ),
                _ => (authority, None),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(format!("{url:?} has no host"));
            }
            let port = port
                .or(default)
                .ok_or_else(|| format!("{url:?} has no port (syslog drains need one)"))?;
            if port == 0 {
                return Err("port 0 is not a valid drain port".into());
            }
            Ok((host.to_owned(), port))
        };
        match scheme {
            "syslog" | "syslog-tls" | "syslog-udp" => {
                if rest.len() != authority.len() && rest[authority.len()..] != *"/" {
                    return Err(format!("syslog URLs take no path: {url:?}"));
                }
                let (host, port) = host_port(None)?;
                Ok(match scheme {
                    "syslog" => DrainKind::SyslogTcp { host, port },
                    "syslog-tls" => DrainKind::SyslogTls { host, port },
                    _ => DrainKind::SyslogUdp { host, port },
                })
            }
            "http" | "https" => {
                host_port(Some(if scheme == "https" { 443 } else { 80 }))?;
                Ok(DrainKind::Http {
                    url: url.to_owned(),
                    tls: scheme == "https",
                })
            }
            other => Err(format!(
                "unsupported scheme {other:?} (expected syslog, syslog-tls, syslog-udp, http or https)"
            )),
        }
    }

    /// Whether the transport is TLS (so `tls` options apply).
    pub fn uses_tls(&self) -> bool {
        matches!(
            self,
            DrainKind::SyslogTls { .. } | DrainKind::Http { tls: true, .. }
        )
    }
}
