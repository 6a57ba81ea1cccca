//! Drain URLs: which kind of drain a URL names, and its address.

/// Why a drain URL does not parse; each message says what to write instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// No `scheme://`.
    #[error("{url:?} is not a URL (expected scheme://host:port)")]
    NotAUrl {
        /// The URL.
        url: String,
    },
    /// A `user:password@` part.
    #[error("credentials do not belong in the URL; use the drain's credential settings")]
    Credentials,
    /// A port that is not a number.
    #[error("port {port:?} is not a number 1-65535")]
    BadPort {
        /// The port as written.
        port: String,
    },
    /// An empty host.
    #[error("{url:?} has no host")]
    NoHost {
        /// The URL.
        url: String,
    },
    /// A syslog URL without a port.
    #[error("{url:?} has no port (syslog drains need one)")]
    NoPort {
        /// The URL.
        url: String,
    },
    /// Port 0.
    #[error("port 0 is not a valid drain port")]
    PortZero,
    /// A syslog URL with a path, query or fragment.
    #[error("syslog URLs take no path: {url:?}")]
    SyslogPath {
        /// The URL.
        url: String,
    },
    /// A scheme sluice has no drain for.
    #[error("unsupported scheme {scheme:?} (expected syslog, syslog-tls, syslog-udp, http or https)")]
    Scheme {
        /// The scheme as written.
        scheme: String,
    },
}

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
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| UrlError::NotAUrl { url: url.to_owned() })?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.contains('@') {
            return Err(UrlError::Credentials);
        }
        let host_port = |default: Option<u16>| -> Result<(String, u16), UrlError> {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                    h,
                    Some(
                        p.parse::<u16>()
                            .map_err(|_| UrlError::BadPort { port: p.to_owned() })?,
                    ),
                ),
                _ => (authority, None),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() {
                return Err(UrlError::NoHost { url: url.to_owned() });
            }
            let port = port
                .or(default)
                .ok_or_else(|| UrlError::NoPort { url: url.to_owned() })?;
            if port == 0 {
                return Err(UrlError::PortZero);
            }
            Ok((host.to_owned(), port))
        };
        match scheme {
            "syslog" | "syslog-tls" | "syslog-udp" => {
                if rest.len() != authority.len() && rest[authority.len()..] != *"/" {
                    return Err(UrlError::SyslogPath { url: url.to_owned() });
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
            other => Err(UrlError::Scheme {
                scheme: other.to_owned(),
            }),
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
