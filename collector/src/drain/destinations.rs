//! The destinations policy: which addresses a drain may connect to, judged on the addresses a
//! name resolves to, right before connecting.
//!
//! Invariants:
//! * By default the node's own and the link-local ranges are refused: loopback (`127.0.0.0/8`,
//!   `::1`), unspecified (`0.0.0.0/8`, `::`), link-local (`169.254.0.0/16`, where cloud metadata
//!   services answer, and `fe80::/10`), plus the admin's `--deny-destinations` ranges. The admin's
//!   `--allow-destinations` ranges are allowed even inside those (the tests' local receivers).
//! * IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are judged as the IPv4 address they carry.
//! * A name is connected to only through the addresses the policy allows; when it resolves to none,
//!   the attempt fails with [`Refused`], naming the address and the rule (counted as a delivery
//!   failure with cause `destination`, shown as the drain's last error, and retried with backoff).

use std::{
    error::Error as StdError,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

/// An address range, `ADDRESS/PREFIX` (a bare address is the range of that address alone).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    const fn v4(octets: [u8; 4], prefix: u8) -> Self {
        Self {
            addr: IpAddr::V4(Ipv4Addr::new(octets[0], octets[1], octets[2], octets[3])),
            prefix,
        }
    }

    const fn v6(addr: Ipv6Addr, prefix: u8) -> Self {
        Self {
            addr: IpAddr::V6(addr),
            prefix,
        }
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        fn under(net: u128, ip: u128, bits: u32, prefix: u8) -> bool {
            let shift = bits - u32::from(prefix);
            prefix == 0 || (net >> shift) == (ip >> shift)
        }
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                under(u32::from(net).into(), u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => under(u128::from(net), u128::from(ip), 128, self.prefix),
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Text that is not an address range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an address range (like 10.0.0.0/8 or fd00::/8)")]
pub struct CidrError {
    /// The text as given.
    pub text: String,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, CidrError> {
        let bad = || CidrError {
            text: text.to_owned(),
        };
        let (addr, prefix) = text
            .trim()
            .split_once('/')
            .map_or((text.trim(), None), |(a, p)| (a, Some(p)));
        let addr = canonical(addr.parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; every other address as it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An address the policy refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{ip} is refused by the collector's destinations policy ({rule}); an admin may allow it with --allow-destinations"
)]
pub struct Refused {
    /// The address.
    pub ip: IpAddr,
    /// The rule: `loopback 127.0.0.0/8`, `--deny-destinations 10.0.0.0/8`, …
    pub rule: String,
}

/// Which destinations drains may connect to.
#[derive(Clone, Debug)]
pub struct Destinations {
    deny: Vec<(Cidr, &'static str)>,
    allow: Vec<Cidr>,
}

impl Default for Destinations {
    /// The built-in refusals only.
    fn default() -> Self {
        Self::new(Vec::new(), Vec::new())
    }
}

impl Destinations {
    /// The built-in refusals, plus `deny`, except what `allow` allows.
    pub fn new(deny: Vec<Cidr>, allow: Vec<Cidr>) -> Self {
        let mut rules = vec![
            (Cidr::v4([127, 0, 0, 0], 8), "loopback"),
            (Cidr::v6(Ipv6Addr::LOCALHOST, 128), "loopback"),
            (Cidr::v4([0, 0, 0, 0], 8), "unspecified"),
            (Cidr::v6(Ipv6Addr::UNSPECIFIED, 128), "unspecified"),
            (Cidr::v4([169, 254, 0, 0], 16), "link-local"),
            (
                Cidr::v6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),
                "link-local",
            ),
        ];
        rules.extend(deny.into_iter().map(|cidr| (cidr, "--deny-destinations")));
        Self { deny: rules, allow }
    }

    /// Whether drains may connect to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.allow.iter().any(|cidr| cidr.contains(ip)) {
            return Ok(());
        }
        match self.deny.iter().find(|(cidr, _)| cidr.contains(ip)) {
            Some((cidr, why)) => Err(Refused {
                ip,
                rule: format!("{why} {cidr}"),
            }),
            None => Ok(()),
        }
    }

    /// The addresses of `addrs` that drains may connect to, in order; [`Refused`] (for the first
    /// address) when there is none.
    pub fn filter(&self, addrs: impl IntoIterator<Item = SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        let mut allowed = Vec::new();
        let mut first_refusal = None;
        for addr in addrs {
            match self.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(refused) => {
                    first_refusal.get_or_insert(refused);
                }
            }
        }
        match first_refusal {
            Some(refused) if allowed.is_empty() => Err(refused),
            _ => Ok(allowed),
        }
    }
}

/// Whether a [`Refused`] is anywhere in `err`'s chain (also inside `io::Error`s).
pub fn is_refused(err: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<Refused>() {
            return true;
        }
        next = match e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_refusals_admin_ranges_and_the_allowlist() {
        let policy = Destinations::new(
            vec!["10.0.0.0/8".parse().unwrap()],
            vec!["127.0.0.1/32".parse().unwrap(), "fd00::/8".parse().unwrap()],
        );
        let refused = |ip: &str| policy.check(ip.parse().unwrap()).err().map(|r| r.rule);
        assert_eq!(refused("127.0.0.2"), Some("loopback 127.0.0.0/8".into()));
        assert_eq!(refused("::1"), Some("loopback ::1/128".into()));
        assert_eq!(refused("0.0.0.0"), Some("unspecified 0.0.0.0/8".into()));
        assert_eq!(
            refused("169.254.169.254"),
            Some("link-local 169.254.0.0/16".into())
        );
        assert_eq!(
            refused("::ffff:169.254.169.254"),
            Some("link-local 169.254.0.0/16".into())
        );
        assert_eq!(refused("fe80::1"), Some("link-local fe80::/10".into()));
        assert_eq!(refused("10.1.2.3"), Some("--deny-destinations 10.0.0.0/8".into()));
        for allowed in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "fd00::5",
            "192.0.2.10",
            "2001:db8::1",
            "11.0.0.1",
        ] {
            assert_eq!(refused(allowed), None, "{allowed}");
        }
        let addrs = ["127.0.0.2:1", "192.0.2.1:1"].map(|a| a.parse::<SocketAddr>().unwrap());
        assert_eq!(policy.filter(addrs), Ok(vec![addrs[1]]));
        let err = policy.filter([addrs[0]]).unwrap_err().to_string();
        assert!(
            err.starts_with("127.0.0.2 is refused by the collector's destinations policy (loopback"),
            "{err}"
        );
    }

    #[test]
    fn ranges_parse_or_say_why_not() {
        assert_eq!("10.0.0.0/8".parse::<Cidr>().unwrap().to_string(), "10.0.0.0/8");
        assert_eq!("192.0.2.1".parse::<Cidr>().unwrap().to_string(), "192.0.2.1/32");
        assert_eq!("fd00::/8".parse::<Cidr>().map(|c| c.prefix), Ok(8));
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        for bad in ["10.0.0.0/33", "fd00::/129", "example.com/8", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
