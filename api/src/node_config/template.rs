//! The syntax of syslog templates (HOSTNAME, APP-NAME, PROCID): literal text with placeholders
//! `{namespace}`, `{pod}`, `{podUid}`, `{container}`, `{containerId}`, `{node}`, `{stream}` and
//! `{label:KEY}`.
//!
//! Parsing lives here, in the shared contract, so the operator refuses a template the collector
//! could not use (and knows which pod labels a template reads) with the very same rules.

/// A template could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{` without its `}`.
    #[error("template {template:?}: unclosed '{{'")]
    Unclosed {
        /// The template text.
        template: String,
    },
    /// A placeholder this version does not know.
    #[error(
        "template {template:?}: unknown placeholder {{{name}}} (known: namespace, pod, podUid, container, \
         containerId, node, stream, label:KEY)"
    )]
    Unknown {
        /// The template text.
        template: String,
        /// The placeholder's name.
        name: String,
    },
}

/// One placeholder's source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placeholder {
    /// `{namespace}`.
    Namespace,
    /// `{pod}`.
    Pod,
    /// `{podUid}`.
    PodUid,
    /// `{container}`.
    Container,
    /// `{containerId}`.
    ContainerId,
    /// `{node}`.
    Node,
    /// `{stream}`.
    Stream,
    /// `{label:KEY}`: the pod label `KEY`.
    Label(String),
}

/// A piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Text written as is.
    Literal(String),
    /// A value filled in per container.
    Placeholder(Placeholder),
}

/// Parse `text` into its segments, rejecting unknown placeholders and unclosed braces.
pub fn parse(text: &str) -> Result<Vec<Segment>, TemplateError> {
    let mut segments = Vec::new();
    let mut rest = text;
    // Alternate between literal runs and `{…}` placeholders until the text is used up.
    while let Some(open) = rest.find('{') {
        if open > 0 {
            segments.push(Segment::Literal(rest[..open].to_owned()));
        }
        let close = rest[open..].find('}').ok_or_else(|| TemplateError::Unclosed {
            template: text.to_owned(),
        })?;
        let name = &rest[open + 1..open + close];
        let placeholder = placeholder(name).ok_or_else(|| TemplateError::Unknown {
            template: text.to_owned(),
            name: name.to_owned(),
        })?;
        segments.push(Segment::Placeholder(placeholder));
        rest = &rest[open + close + 1..];
    }
    if !rest.is_empty() {
        segments.push(Segment::Literal(rest.to_owned()));
    }
    Ok(segments)
}

fn placeholder(name: &str) -> Option<Placeholder> {
    Some(match name {
        "namespace" => Placeholder::Namespace,
        "pod" => Placeholder::Pod,
        "podUid" => Placeholder::PodUid,
        "container" => Placeholder::Container,
        "containerId" => Placeholder::ContainerId,
        "node" => Placeholder::Node,
        "stream" => Placeholder::Stream,
        _ => Placeholder::Label(name.strip_prefix("label:").filter(|k| !k.is_empty())?.to_owned()),
    })
}

/// The pod label keys `text` reads (`{label:KEY}`); none when it does not parse.
pub fn labels(text: &str) -> impl Iterator<Item = String> {
    parse(text)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|s| match s {
            Segment::Placeholder(Placeholder::Label(key)) => Some(key),
            _ => None,
        })
}
