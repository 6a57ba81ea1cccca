//! The regular expressions shared by the CEL rules of both kinds, in RE2 syntax (what the API
//! server's CEL `matches` uses). They avoid backslashes (`[.]` instead of an escaped dot) so they
//! read the same in Rust, in CEL string literals and in the generated YAML.

/// A DNS label (RFC 1123): what Kubernetes accepts as a namespace, a Service name, and what sluice
/// accepts as a drain or container name.
pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A host name or IPv4 address, or an IPv6 address in brackets.
pub const HOST: &str = "([a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?([.][a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?)*|[[][0-9a-fA-F:.]+[]])";

/// A TCP/UDP port from 1 to 65535, without leading zeros.
pub const PORT: &str =
    "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

use kube::core::{Message, Rule};

fn rule(expression: String, message: &str) -> Rule {
    Rule::new(expression).message(Message::Message(message.to_owned()))
}

/// `spec.url`: a syslog URL is `scheme://host:port` with no path.
pub fn syslog_url() -> Rule {
    rule(
        format!("!self.startsWith('syslog') || self.matches('^syslog(-tls|-udp)?://{HOST}:{PORT}/?$')"),
        "a syslog URL is scheme://host:port with a port from 1 to 65535 and no path, \
         e.g. syslog-tls://logs.example.com:6514",
    )
}

/// `spec.url`: an HTTP URL has a host and, if it names one, a valid port.
pub fn http_url() -> Rule {
    rule(
        format!("!self.matches('^https?://') || self.matches('^https?://{HOST}(:{PORT})?([/?#].*)?$')"),
        "an http(s) URL needs a host and, if it gives a port, a port from 1 to 65535, \
         e.g. https://logs.example.com/ingest",
    )
}

/// Root rule: the object's name is a DNS label (drain names end up in node configs, metric
/// labels and syslog structured data, where only DNS labels are safe).
pub fn resource_name_is_dns_label(kind: &str) -> Rule {
    rule(
        format!("size(self.metadata.name) <= 63 && self.metadata.name.matches('{DNS_LABEL}')"),
        &format!(
            "a {kind} name must be a DNS label: at most 63 lower-case letters, digits and '-', \
             starting and ending with a letter or digit"
        ),
    )
}
