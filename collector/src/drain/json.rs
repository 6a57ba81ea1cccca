//! The JSON-lines encoder for `http://` and `https://` drains.
//!
//! Every line becomes one JSON object followed by `\n`, with the keys in this order:
//! `time`, `message`, `stream`, `namespace`, `pod`, `podUid`, `container`, `containerId`, `node`,
//! `id` (the [`crate::pipeline::MsgId`] in hex, stable across re-sends), `labels` (an object), and
//! `truncated: true` only when the line was cut to `maxLineBytes`.
//!
//! Invariants: the container's fields are rendered once and cached by container id and metadata
//! revision (so a changed label is seen at once, even in metadata written in place); per line only
//! the time, message, stream and id are escaped and copied, with no allocation.

use std::collections::HashMap;

use sluice_api::node_config::Stream;

use super::text::{MsgIdHex, json_string};
use crate::pipeline::{Batch, ContainerMeta, Encoder, LogLine};

#[derive(Debug)]
struct Rendered {
    /// What was rendered (its revision is the one last seen for this container).
    meta: ContainerMeta,
    /// `,"namespace":…,"node":"…","id":"`
    fields: Vec<u8>,
    /// `","labels":{…}`
    labels: Vec<u8>,
}

/// The JSON-lines [`Encoder`].
#[derive(Debug, Default)]
pub struct JsonEncoder {
    cache: HashMap<String, Rendered>,
}

/// The cache is cleared when it holds this many containers.
const CACHE_MAX: usize = 4096;

impl JsonEncoder {
    /// A new encoder.
    pub fn new() -> Self {
        Self::default()
    }

    fn rendered(&mut self, meta: &ContainerMeta) -> &Rendered {
        let fresh = match self.cache.get_mut(&meta.container_id) {
            Some(r) if meta.revision != 0 && r.meta.revision == meta.revision => false,
            Some(r) if r.meta == *meta => {
                r.meta.revision = meta.revision;
                false
            }
            _ => true,
        };
        if fresh {
            if self.cache.len() >= CACHE_MAX {
                self.cache.clear();
            }
            self.cache.insert(meta.container_id.clone(), render(meta));
        }
        self.cache
            .get(&meta.container_id)
            .expect("invariant: present or inserted above")
    }
}

fn render(meta: &ContainerMeta) -> Rendered {
    let mut fields = Vec::new();
    let pairs = [
        ("namespace", &meta.namespace),
        ("pod", &meta.pod),
        ("podUid", &meta.pod_uid),
        ("container", &meta.container),
        ("containerId", &meta.container_id),
        ("node", &meta.node),
    ];
    for (key, value) in pairs {
        fields.extend_from_slice(b",\"");
        fields.extend_from_slice(key.as_bytes());
        fields.extend_from_slice(b"\":");
        json_string(value, &mut fields);
    }
    fields.extend_from_slice(b",\"id\":\"");
    let mut labels = b"\",\"labels\":{".to_vec();
    for (i, (key, value)) in meta.labels.iter().enumerate() {
        if i > 0 {
            labels.push(b',');
        }
        json_string(key, &mut labels);
        labels.push(b':');
        json_string(value, &mut labels);
    }
    labels.push(b'}');
    Rendered {
        meta: meta.clone(),
        fields,
        labels,
    }
}

impl Encoder for JsonEncoder {
    /// Appends one JSON object and its newline as one frame. [`Batch::lines`] is the engine's to
    /// count.
    fn encode(&mut self, line: &LogLine<'_>, batch: &mut Batch) {
        let id = MsgIdHex::new(line.id);
        let rendered = self.rendered(line.meta);
        let stream: &[u8] = match line.stream {
            Stream::Stdout => b",\"stream\":\"stdout\"",
            Stream::Stderr => b",\"stream\":\"stderr\"",
        };
        batch.push_frame(|out| {
            out.extend_from_slice(b"{\"time\":");
            json_string(line.timestamp, out);
            out.extend_from_slice(b",\"message\":");
            json_string(line.message, out);
            out.extend_from_slice(stream);
            out.extend_from_slice(&rendered.fields);
            out.extend_from_slice(id.as_bytes());
            out.extend_from_slice(&rendered.labels);
            if line.truncated {
                out.extend_from_slice(b",\"truncated\":true");
            }
            out.extend_from_slice(b"}\n");
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::pipeline::MsgId;

    #[test]
    fn encodes_one_object_per_line() {
        let meta = ContainerMeta {
            container_id: "c0ffee".into(),
            namespace: "shop".into(),
            pod: "web-1".into(),
            pod_uid: "u-1".into(),
            container: "app".into(),
            labels: BTreeMap::from([("app".into(), "web".into()), ("q\"".into(), "é\n".into())]),
            node: "node-a".into(),
            revision: 0,
        };
        let mut enc = JsonEncoder::new();
        let mut batch = Batch::default();
        let line = |message, stream, truncated| LogLine {
            meta: &meta,
            stream,
            timestamp: "2026-11-21T15:15:34.165439785Z",
            message,
            id: MsgId {
                file: 0xab,
                offset: 0x10,
            },
            truncated,
        };
        enc.encode(&line("hello \"world\"\t\u{1}", Stream::Stdout, false), &mut batch);
        enc.encode(&line("日本", Stream::Stderr, true), &mut batch);
        let want = concat!(
            r#"{"time":"2026-11-21T15:15:34.165439785Z","message":"hello \"world\"\t\u0001","stream":"stdout","#,
            r#""namespace":"shop","pod":"web-1","podUid":"u-1","container":"app","containerId":"c0ffee","#,
            r#""node":"node-a","id":"00000000000000ab10","labels":{"app":"web","q\"":"é\n"}}"#,
            "\n",
            r#"{"time":"2026-11-21T15:15:34.165439785Z","message":"日本","stream":"stderr","#,
            r#""namespace":"shop","pod":"web-1","podUid":"u-1","container":"app","containerId":"c0ffee","#,
            r#""node":"node-a","id":"00000000000000ab10","labels":{"app":"web","q\"":"é\n"},"truncated":true}"#,
            "\n",
        );
        assert_eq!(String::from_utf8(batch.bytes.clone()).unwrap(), want);
        assert_eq!(batch.frame_ends.len(), 2);
        for frame in batch.frames() {
            let v: serde_json::Value = serde_json::from_slice(frame).unwrap();
            assert_eq!(v["labels"]["q\""], "é\n");
        }
    }

    /// The engine writes a container's new metadata over the old in place (same address): the
    /// changed label must show in the very next line.
    #[test]
    fn a_label_changed_in_place_is_seen() {
        let mut meta = ContainerMeta {
            container_id: "c0ffee".into(),
            labels: BTreeMap::from([("version".into(), "1".into())]),
            revision: ContainerMeta::next_revision(),
            ..ContainerMeta::default()
        };
        let mut enc = JsonEncoder::new();
        let encode = |enc: &mut JsonEncoder, meta: &ContainerMeta| {
            let mut batch = Batch::default();
            let line = LogLine {
                meta,
                stream: Stream::Stdout,
                timestamp: "2026-11-21T15:15:34.165439785Z",
                message: "m",
                id: MsgId { file: 1, offset: 1 },
                truncated: false,
            };
            enc.encode(&line, &mut batch);
            let v: serde_json::Value = serde_json::from_slice(&batch.bytes).unwrap();
            v["labels"]["version"].as_str().unwrap_or_default().to_owned()
        };
        assert_eq!(encode(&mut enc, &meta), "1");
        meta = ContainerMeta {
            labels: BTreeMap::from([("version".into(), "2".into())]),
            revision: ContainerMeta::next_revision(),
            ..meta.clone()
        };
        assert_eq!(encode(&mut enc, &meta), "2");
        // Unknown revisions (0) are compared by content.
        meta.revision = 0;
        meta.labels.insert("version".into(), "3".into());
        assert_eq!(encode(&mut enc, &meta), "3");
    }
}
