//! Templates for the syslog HOSTNAME, APP-NAME and PROCID fields.
//!
//! A template is literal text with placeholders: `{namespace}`, `{pod}`, `{podUid}`,
//! `{container}`, `{containerId}`, `{node}`, `{stream}` and `{label:KEY}`.
//!
//! Invariants:
//! * Parsing happens once per drain, in its plan (the shared syntax rejects unknown placeholders
//!   and unclosed braces with a message naming them); rendering never fails.
//! * **Empty fields take their separator with them.** Literal text *between* two placeholders is
//!   written only when the placeholders on both sides rendered non-empty. So on a plain Docker host,
//!   where the namespace is empty, `{namespace}/{pod}` renders `web` rather than `/web`, and
//!   `{pod}.{namespace}` renders `web` rather than `web.`. Literal text before the first or after the
//!   last placeholder is always written.
//! * [`sanitize`] makes the result an RFC5424 header field: printable US-ASCII (33..=126) only
//!   (every other character becomes `_`), at most `max` bytes, and `-` (the NILVALUE) when empty.

use sluice_api::node_config::{
    Stream,
    template::{self as syntax, Placeholder as Field, Segment as Part},
};

use crate::pipeline::ContainerMeta;

/// A template could not be parsed (the syntax is the shared contract's).
pub use sluice_api::node_config::template::TemplateError as Error;

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// The template of parsed `parts` (a drain's plan holds them parsed).
    pub fn new(parts: Vec<Part>) -> Self {
        Self { parts }
    }

    /// Parse `text`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        syntax::parse(text).map(Self::new)
    }

    /// Whether the template uses `{stream}` (then it must be rendered per stream).
    pub fn uses_stream(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Placeholder(Field::Stream)))
    }

    /// Render for one container and stream (raw: not yet sanitized).
    pub fn render(&self, meta: &ContainerMeta, stream: Stream) -> String {
        let values: Vec<Option<&str>> = self
            .parts
            .iter()
            .map(|part| match part {
                Part::Literal(_) => None,
                Part::Placeholder(field) => Some(field_value(field, meta, stream)),
            })
            .collect();
        let mut out = String::new();
        for (i, part) in self.parts.iter().enumerate() {
            match part {
                Part::Placeholder(_) => out.push_str(values[i].unwrap_or_default()),
                Part::Literal(text) => {
                    // The nearest placeholders on each side decide whether a separator is kept.
                    let before = values[..i].iter().rev().find_map(|v| *v);
                    let after = values[i + 1..].iter().find_map(|v| *v);
                    let keep = match (before, after) {
                        (Some(b), Some(a)) => !b.is_empty() && !a.is_empty(),
                        _ => true,
                    };
                    if keep {
                        out.push_str(text);
                    }
                }
            }
        }
        out
    }
}

fn field_value<'a>(field: &'a Field, meta: &'a ContainerMeta, stream: Stream) -> &'a str {
    match field {
        Field::Namespace => &meta.namespace,
        Field::Pod => &meta.pod,
        Field::PodUid => &meta.pod_uid,
        Field::Container => &meta.container,
        Field::ContainerId => &meta.container_id,
        Field::Node => &meta.node,
        Field::Stream => stream.as_str(),
        Field::Label(key) => meta.labels.get(key).map(String::as_str).unwrap_or_default(),
    }
}

/// Make `raw` an RFC5424 header field of at most `max` bytes: printable US-ASCII without spaces
/// (anything else becomes `_`), `-` when empty.
pub fn sanitize(raw: &str, max: usize) -> String {
    let mut out: String = raw
        .chars()
        .map(|c| if ('!'..='~').contains(&c) { c } else { '_' })
        .take(max)
        .collect();
    if out.is_empty() {
        out.push('-');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn meta(namespace: &str) -> ContainerMeta {
        ContainerMeta {
            container_id: "abc123".into(),
            namespace: namespace.into(),
            pod: "web-1".into(),
            pod_uid: "uid-9".into(),
            container: "app".into(),
            labels: BTreeMap::from([("team".to_owned(), "blue".to_owned())]),
            node: "node-a".into(),
            revision: 0,
        }
    }

    #[test]
    fn renders_every_placeholder() {
        let t = Template::parse(
            "{namespace}|{pod}|{podUid}|{container}|{containerId}|{node}|{stream}|{label:team}|{label:none}",
        )
        .unwrap();
        // `{label:none}` is empty, so the separator before it goes too.
        assert_eq!(
            t.render(&meta("shop"), Stream::Stderr),
            "shop|web-1|uid-9|app|abc123|node-a|stderr|blue"
        );
        assert!(t.uses_stream());
    }

    #[test]
    fn empty_fields_drop_their_separator() {
        let cases = [
            ("{namespace}/{pod}", "", "web-1"),
            ("{namespace}/{pod}", "shop", "shop/web-1"),
            ("{pod}.{namespace}", "", "web-1"),
            ("k8s-{namespace}-x", "", "k8s--x"),
            ("{namespace}", "", ""),
            ("plain", "", "plain"),
        ];
        for (template, namespace, want) in cases {
            let got = Template::parse(template)
                .unwrap()
                .render(&meta(namespace), Stream::Stdout);
            assert_eq!(got, want, "{template} with namespace {namespace:?}");
        }
    }

    #[test]
    fn parse_errors_name_the_problem() {
        let e = Template::parse("{pod").unwrap_err().to_string();
        assert_eq!(e, "template \"{pod\": unclosed '{'");
        let e = Template::parse("{bogus}").unwrap_err().to_string();
        assert!(
            e.starts_with("template \"{bogus}\": unknown placeholder {bogus}"),
            "{e}"
        );
        assert!(Template::parse("{label:}").is_err());
    }

    #[test]
    fn sanitize_cuts_and_replaces() {
        assert_eq!(sanitize("", 48), "-");
        assert_eq!(sanitize("a b\tc", 48), "a_b_c");
        assert_eq!(sanitize("café", 48), "caf_");
        assert_eq!(sanitize(&"x".repeat(300), 255), "x".repeat(255));
    }
}
