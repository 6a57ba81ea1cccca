//! The RFC5424 encoder for `syslog://`, `syslog-tls://` and `syslog-udp://` drains.
//!
//! Every line becomes `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG`:
//! * PRI: facility user (1); severity info (6) for stdout and err (3) for stderr, so `<14>` / `<11>`.
//! * TIMESTAMP: the runtime's RFC3339 time with the fraction cut to 6 digits (RFC5424 §6.2.3.1
//!   allows no more); `-` when the runtime gave none that is printable ASCII.
//! * HOSTNAME / APP-NAME / PROCID: rendered from the drain's templates (see [`super::template`]),
//!   sanitized and cut to 255 / 48 / 128 bytes.
//! * MSGID: the line's [`crate::pipeline::MsgId`] in hex (≤ 32 bytes), stable across re-sends, so
//!   receivers can drop repeats.
//! * STRUCTURED-DATA: one `kubernetes@32473` element with the non-empty metadata (when enabled),
//!   `truncated="true"` when the line or datagram was cut, `part="i/n"` when a datagram was split.
//! * MSG: the line as is (UTF-8, no BOM).
//!
//! Invariants: everything that is fixed per container (header fields, SD element) is rendered once
//! and cached by container id and metadata revision (a changed label is seen at once), so the per-line work is copying slices into the batch with no
//! allocation. Stream framing is octet counting (RFC6587 §3.4.1, `LEN SP MSG`); datagram framing is
//! one message per frame, never longer than `maxDatagramBytes` unless the fixed header alone is.

use std::collections::HashMap;

use prometheus::IntCounter;
use sluice_api::node_config::{Stream, SyslogPlan, UdpOversize};

use super::{
    template::{Template, sanitize},
    text::{MsgIdHex, cut_timestamp, first_char_len, floor_char_boundary},
};
use crate::pipeline::{Batch, ContainerMeta, Encoder, LogLine};

/// The SD-ID of sluice's structured data. 32473 is the private enterprise number RFC 5612 reserves
/// for documentation and examples; sluice has no number of its own (yet).
pub const SD_ID: &str = "kubernetes@32473";

/// How messages are put on the wire.
#[derive(Clone, Debug)]
pub enum Framing {
    /// TCP and TLS: `LEN SP MSG`.
    OctetCounting,
    /// UDP: one message per frame of at most `max` bytes.
    Datagram {
        /// `maxDatagramBytes`.
        max: usize,
        /// What to do with longer messages.
        oversize: UdpOversize,
        /// Counts messages split into several datagrams.
        split: IntCounter,
        /// Counts messages truncated to one datagram.
        truncated: IntCounter,
    },
}

/// The drain's parsed syslog format.
#[derive(Clone, Debug)]
pub struct SyslogSpec {
    hostname: Template,
    app_name: Template,
    procid: Template,
    structured_data: bool,
    framing: Framing,
}

impl SyslogSpec {
    /// The format of a drain's plan, put on the wire with `framing`.
    pub fn new(plan: &SyslogPlan, framing: Framing) -> Self {
        Self {
            hostname: Template::new(plan.hostname.clone()),
            app_name: Template::new(plan.app_name.clone()),
            procid: Template::new(plan.procid.clone()),
            structured_data: plan.structured_data,
            framing,
        }
    }
}

/// What is fixed for one container: ` HOSTNAME APP-NAME PROCID ` per stream and the open SD element.
#[derive(Debug)]
struct Rendered {
    /// What was rendered (its revision is the one last seen for this container).
    meta: ContainerMeta,
    header: [Vec<u8>; 2],
    sd: Vec<u8>,
}

/// The RFC5424 [`Encoder`].
#[derive(Debug)]
pub struct SyslogEncoder {
    spec: SyslogSpec,
    cache: HashMap<String, Rendered>,
}

/// The cache is cleared when it holds this many containers (a node runs far fewer at a time).
const CACHE_MAX: usize = 4096;

impl SyslogEncoder {
    /// An encoder for `spec`.
    pub fn new(spec: SyslogSpec) -> Self {
        Self {
            spec,
            cache: HashMap::new(),
        }
    }
}

/// The cached rendering for `meta`'s container (re-rendered when its metadata changed).
fn lookup<'c>(
    cache: &'c mut HashMap<String, Rendered>,
    spec: &SyslogSpec,
    meta: &ContainerMeta,
) -> &'c Rendered {
    let fresh = match cache.get_mut(&meta.container_id) {
        Some(r) if meta.revision != 0 && r.meta.revision == meta.revision => false,
        Some(r) if r.meta == *meta => {
            r.meta.revision = meta.revision;
            false
        }
        _ => true,
    };
    if fresh {
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(meta.container_id.clone(), render(spec, meta));
    }
    cache
        .get(&meta.container_id)
        .expect("invariant: present or inserted above")
}

fn render(spec: &SyslogSpec, meta: &ContainerMeta) -> Rendered {
    let header = |stream: Stream| {
        let host = sanitize(&spec.hostname.render(meta, stream), 255);
        let app = sanitize(&spec.app_name.render(meta, stream), 48);
        let procid = sanitize(&spec.procid.render(meta, stream), 128);
        format!(" {host} {app} {procid} ").into_bytes()
    };
    let mut sd = Vec::new();
    if spec.structured_data {
        sd.extend_from_slice(b"[");
        sd.extend_from_slice(SD_ID.as_bytes());
        let params = [
            ("namespace", &meta.namespace),
            ("pod", &meta.pod),
            ("podUid", &meta.pod_uid),
            ("container", &meta.container),
            ("containerId", &meta.container_id),
            ("node", &meta.node),
        ];
        for (name, value) in params.into_iter().filter(|(_, v)| !v.is_empty()) {
            sd.push(b' ');
            sd.extend_from_slice(name.as_bytes());
            sd.extend_from_slice(b"=\"");
            escape_param_value(value, &mut sd);
            sd.push(b'"');
        }
    }
    Rendered {
        meta: meta.clone(),
        header: [header(Stream::Stdout), header(Stream::Stderr)],
        sd,
    }
}

/// RFC5424 §6.3.3: `"`, `\` and `]` are escaped with a backslash inside PARAM-VALUE.
pub fn escape_param_value(value: &str, out: &mut Vec<u8>) {
    for &b in value.as_bytes() {
        if matches!(b, b'"' | b'\\' | b']') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// The pieces of one message, borrowed; written without allocating.
struct Message<'a> {
    pri: &'static [u8],
    ts: (&'a str, &'a str),
    header: &'a [u8],
    msgid: &'a [u8],
    sd: &'a [u8],
    truncated: bool,
    part: Option<(usize, usize)>,
    msg: &'a [u8],
}

impl Message<'_> {
    fn sd_len(&self) -> usize {
        let extra = if self.truncated { TRUNCATED.len() } else { 0 }
            + self
                .part
                .map_or(0, |(i, n)| PART.len() + digits(i) + 1 + digits(n) + 1);
        match (self.sd.is_empty(), extra) {
            (true, 0) => 1,
            (true, _) => 1 + SD_ID.len() + extra + 1,
            (false, _) => self.sd.len() + extra + 1,
        }
    }

    /// Everything but MSG.
    fn head_len(&self) -> usize {
        self.pri.len()
            + self.ts.0.len()
            + self.ts.1.len()
            + self.header.len()
            + self.msgid.len()
            + 1
            + self.sd_len()
            + 1
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.pri);
        out.extend_from_slice(self.ts.0.as_bytes());
        out.extend_from_slice(self.ts.1.as_bytes());
        out.extend_from_slice(self.header);
        out.extend_from_slice(self.msgid);
        out.push(b' ');
        if self.sd.is_empty() && !self.truncated && self.part.is_none() {
            out.push(b'-');
        } else {
            if self.sd.is_empty() {
                out.push(b'[');
                out.extend_from_slice(SD_ID.as_bytes());
            } else {
                out.extend_from_slice(self.sd);
            }
            if self.truncated {
                out.extend_from_slice(TRUNCATED);
            }
            if let Some((i, n)) = self.part {
                let mut buf = itoa::Buffer::new();
                out.extend_from_slice(PART);
                out.extend_from_slice(buf.format(i).as_bytes());
                out.push(b'/');
                out.extend_from_slice(buf.format(n).as_bytes());
                out.push(b'"');
            }
            out.push(b']');
        }
        out.push(b' ');
        out.extend_from_slice(self.msg);
    }
}

const TRUNCATED: &[u8] = b" truncated=\"true\"";
const PART: &[u8] = b" part=\"";

fn digits(value: usize) -> usize {
    value.checked_ilog10().map_or(1, |d| d as usize + 1)
}

impl Encoder for SyslogEncoder {
    /// Appends one message (octet-counted) or one or more datagrams. [`Batch::lines`] is the
    /// engine's to count.
    fn encode(&mut self, line: &LogLine<'_>, batch: &mut Batch) {
        let id = MsgIdHex::new(line.id);
        let Self { spec, cache } = self;
        let rendered = lookup(cache, spec, line.meta);
        let (pri, header): (&'static [u8], _) = match line.stream {
            Stream::Stdout => (b"<14>1 ", &rendered.header[0]),
            Stream::Stderr => (b"<11>1 ", &rendered.header[1]),
        };
        let message = Message {
            pri,
            ts: cut_timestamp(line.timestamp),
            header,
            msgid: id.as_bytes(),
            sd: &rendered.sd,
            truncated: line.truncated,
            part: None,
            msg: line.message.as_bytes(),
        };
        match &spec.framing {
            Framing::OctetCounting => {
                let len = message.head_len() + message.msg.len();
                batch.push_frame(|out| {
                    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
                    out.push(b' ');
                    message.write(out);
                });
            }
            Framing::Datagram {
                max,
                oversize,
                split,
                truncated,
            } => {
                encode_datagrams(message, *max, *oversize, (split, truncated), batch);
            }
        }
    }
}

/// One datagram when the message fits; otherwise split or truncated (and counted).
fn encode_datagrams(
    mut message: Message<'_>,
    max: usize,
    oversize: UdpOversize,
    (split, truncated): (&IntCounter, &IntCounter),
    batch: &mut Batch,
) {
    if message.head_len() + message.msg.len() <= max {
        batch.push_frame(|out| message.write(out));
        return;
    }
    let full = message.msg;
    if oversize == UdpOversize::Truncate {
        truncated.inc();
        message.truncated = true;
        message.msg = cut_to(full, max.saturating_sub(message.head_len()));
        batch.push_frame(|out| message.write(out));
        return;
    }
    split.inc();
    let n = split_count(&mut message, max);
    let room = max.saturating_sub(message.head_len()).max(1);
    let mut rest = full;
    // Emit complete messages with the same MSGID, each carrying `part="i/n"`; a chunk never ends
    // inside a UTF-8 character.
    for i in 1..=n {
        let chunk = if i == n { rest } else { cut_to(rest, room) };
        rest = &rest[chunk.len()..];
        message.part = Some((i, n));
        message.msg = chunk;
        batch.push_frame(|out| message.write(out));
    }
}

/// How many parts `message.msg` needs; drops the container metadata from the SD element when it
/// leaves too little room for text.
fn split_count(message: &mut Message<'_>, max: usize) -> usize {
    let mut n = 2;
    // The part counter's width changes the header length, which changes the count: iterate to a
    // fixed point (a handful of rounds at most).
    loop {
        message.part = Some((n, n));
        let room = max.saturating_sub(message.head_len());
        if room < 64 && !message.sd.is_empty() {
            message.sd = &[];
            continue;
        }
        let needed = count_chunks(message.msg, room.max(1));
        if needed <= n {
            return needed.max(1);
        }
        n = needed;
    }
}

fn count_chunks(mut text: &[u8], room: usize) -> usize {
    let mut n = 0;
    while !text.is_empty() {
        let chunk = cut_to(text, room);
        text = &text[chunk.len()..];
        n += 1;
    }
    n
}

/// The longest prefix of `text` of at most `room` bytes that ends on a character boundary (at least
/// one character, so progress is always made).
fn cut_to(text: &[u8], room: usize) -> &[u8] {
    if text.len() <= room {
        return text;
    }
    match floor_char_boundary(text, room) {
        0 => &text[..first_char_len(text)],
        cut => &text[..cut],
    }
}

#[cfg(test)]
mod tests;
