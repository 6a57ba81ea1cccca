//! Kubernetes label selectors as text (`kubectl -l`, `labelSelector=`), parsed once here for the
//! operator (which refuses a bad one before asking any collector) and the collector (which
//! matches pod labels with it, also of pods already deleted).
//!
//! The grammar is the API server's for the set-based operators: requirements separated by
//! commas, all of which must hold; each is `key`, `!key`, `key=value`, `key==value`,
//! `key!=value`, `key in (v1,v2)` or `key notin (v1,v2)`. As in Kubernetes, `key!=value` and
//! `key notin (…)` also hold for a pod without the label, an empty text selects everything, and
//! keys and values must be valid label keys and values. The numeric `key>n`/`key<n` are refused
//! (`kubectl logs` has no use for them and sluice does not support them).
//!
//! (kube-core's `Selector` matches, but parses no text.)

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
};

/// A parsed label selector: every requirement must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement on one label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// What its value must be.
    pub op: Op,
}

/// What a requirement asks of a label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// The label is set (`key`).
    Exists,
    /// The label is not set (`!key`).
    DoesNotExist,
    /// The label is set to one of these (`key=v`, `key==v`, `key in (…)`).
    In(BTreeSet<String>),
    /// The label is not set, or to none of these (`key!=v`, `key notin (…)`).
    NotIn(BTreeSet<String>),
}

/// Why a text is not a label selector; `at` is the byte offset where parsing stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("label selector {text:?}: {kind} (at character {at})")]
pub struct SelectorError {
    /// The text.
    pub text: String,
    /// Byte offset of the problem.
    pub at: usize,
    /// What is wrong.
    pub kind: ErrorKind,
}

/// What is wrong with a selector text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    /// A label key was expected.
    #[error("a label key is missing")]
    MissingKey,
    /// Not a valid label key.
    #[error(
        "{0:?} is not a valid label key (a name of at most 63 characters [A-Za-z0-9._-] starting and ending alphanumeric, optionally prefixed by a DNS subdomain and /)"
    )]
    BadKey(String),
    /// Not a valid label value.
    #[error(
        "{0:?} is not a valid label value (at most 63 characters [A-Za-z0-9._-] starting and ending alphanumeric, or empty)"
    )]
    BadValue(String),
    /// Something else than an operator, a comma or the end after a key.
    #[error("expected =, ==, !=, in, notin, a comma or the end, found {0:?}")]
    BadOperator(String),
    /// `>`, `<`: numeric comparisons.
    #[error("the operators > and < are not supported")]
    Numeric,
    /// `in`/`notin` not followed by a parenthesised list.
    #[error("expected ( after in or notin")]
    MissingOpenParen,
    /// A list not closed, or values not separated by commas.
    #[error("expected , or ) in a value list")]
    UnclosedList,
    /// `in ()`.
    #[error("in and notin need at least one value")]
    EmptyList,
    /// Two requirements not separated by a comma.
    #[error("expected a comma between requirements, found {0:?}")]
    MissingComma(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Not,
    Eq,
    DoubleEq,
    NotEq,
    Comma,
    Open,
    Close,
    Numeric,
}

impl Token {
    fn text(&self) -> String {
        match self {
            Token::Word(w) => w.clone(),
            Token::Not => "!".into(),
            Token::Eq => "=".into(),
            Token::DoubleEq => "==".into(),
            Token::NotEq => "!=".into(),
            Token::Comma => ",".into(),
            Token::Open => "(".into(),
            Token::Close => ")".into(),
            Token::Numeric => "> or <".into(),
        }
    }
}

/// The tokens of `text` with their byte offsets.
fn tokens(text: &str) -> Vec<(usize, Token)> {
    let special = |c: char| c.is_whitespace() || "!=,()<>".contains(c);
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            '!' if chars.peek().is_some_and(|(_, n)| *n == '=') => {
                chars.next();
                Token::NotEq
            }
            '!' => Token::Not,
            '=' if chars.peek().is_some_and(|(_, n)| *n == '=') => {
                chars.next();
                Token::DoubleEq
            }
            '=' => Token::Eq,
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            '<' | '>' => Token::Numeric,
            _ => {
                let mut end = at + c.len_utf8();
                while let Some((i, n)) = chars.peek().copied() {
                    if special(n) {
                        break;
                    }
                    end = i + n.len_utf8();
                    chars.next();
                }
                Token::Word(text[at..end].to_owned())
            }
        };
        out.push((at, token));
    }
    out
}

/// A label name or value body: at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both
/// ends.
fn is_name(text: &str) -> bool {
    let b = text.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c))
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain (lowercase, at most 253 characters).
pub fn is_label_key(key: &str) -> bool {
    match key.split_once('/') {
        None => is_name(key),
        Some((prefix, name)) => {
            is_name(name)
                && !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|part| {
                    let b = part.as_bytes();
                    !b.is_empty()
                        && b.len() <= 63
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                        && b[0].is_ascii_alphanumeric()
                        && b[b.len() - 1].is_ascii_alphanumeric()
                })
        }
    }
}

/// A label value: empty, or a name.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_name(value)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<(usize, Token)>,
    next: usize,
}

impl Parser<'_> {
    fn fail(&self, at: usize, kind: ErrorKind) -> SelectorError {
        SelectorError {
            text: self.text.to_owned(),
            at,
            kind,
        }
    }

    fn peek(&self) -> Option<&(usize, Token)> {
        self.tokens.get(self.next)
    }

    fn take(&mut self) -> Option<(usize, Token)> {
        let t = self.tokens.get(self.next).cloned();
        self.next += 1;
        t
    }

    fn end(&self) -> usize {
        self.text.len()
    }

    fn key(&mut self) -> Result<String, SelectorError> {
        match self.take() {
            Some((at, Token::Word(key))) => {
                if is_label_key(&key) {
                    Ok(key)
                } else {
                    Err(self.fail(at, ErrorKind::BadKey(key)))
                }
            }
            Some((at, _)) => Err(self.fail(at, ErrorKind::MissingKey)),
            None => Err(self.fail(self.end(), ErrorKind::MissingKey)),
        }
    }

    /// A value after `=`, `==` or `!=`: a word, or nothing (the empty value) before a comma or
    /// the end.
    fn value(&mut self) -> Result<String, SelectorError> {
        match self.peek().cloned() {
            Some((at, Token::Word(v))) => {
                self.next += 1;
                if is_label_value(&v) {
                    Ok(v)
                } else {
                    Err(self.fail(at, ErrorKind::BadValue(v)))
                }
            }
            None | Some((_, Token::Comma)) => Ok(String::new()),
            Some((at, t)) => Err(self.fail(at, ErrorKind::BadValue(t.text()))),
        }
    }

    /// `( v1, v2 )` after `in`/`notin`.
    fn list(&mut self) -> Result<BTreeSet<String>, SelectorError> {
        match self.take() {
            Some((_, Token::Open)) => {}
            Some((at, _)) => return Err(self.fail(at, ErrorKind::MissingOpenParen)),
            None => return Err(self.fail(self.end(), ErrorKind::MissingOpenParen)),
        }
        if let Some((at, Token::Close)) = self.peek() {
            return Err(self.fail(*at, ErrorKind::EmptyList));
        }
        // Values between commas; a missing one is the empty value (`in (a,)`), as in Kubernetes.
        let mut values = BTreeSet::new();
        loop {
            match self.peek().cloned() {
                Some((at, Token::Word(v))) => {
                    self.next += 1;
                    if !is_label_value(&v) {
                        return Err(self.fail(at, ErrorKind::BadValue(v)));
                    }
                    values.insert(v);
                }
                Some((_, Token::Comma | Token::Close)) => {
                    values.insert(String::new());
                }
                Some((at, _)) => return Err(self.fail(at, ErrorKind::UnclosedList)),
                None => return Err(self.fail(self.end(), ErrorKind::UnclosedList)),
            }
            match self.take() {
                Some((_, Token::Comma)) => {}
                Some((_, Token::Close)) => return Ok(values),
                Some((at, _)) => return Err(self.fail(at, ErrorKind::UnclosedList)),
                None => return Err(self.fail(self.end(), ErrorKind::UnclosedList)),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        if let Some((_, Token::Not)) = self.peek() {
            self.next += 1;
            let key = self.key()?;
            return Ok(Requirement {
                key,
                op: Op::DoesNotExist,
            });
        }
        let key = self.key()?;
        let op = match self.peek().cloned() {
            None | Some((_, Token::Comma)) => Op::Exists,
            Some((_, Token::Eq | Token::DoubleEq)) => {
                self.next += 1;
                Op::In(BTreeSet::from([self.value()?]))
            }
            Some((_, Token::NotEq)) => {
                self.next += 1;
                Op::NotIn(BTreeSet::from([self.value()?]))
            }
            Some((_, Token::Word(w))) if w == "in" => {
                self.next += 1;
                Op::In(self.list()?)
            }
            Some((_, Token::Word(w))) if w == "notin" => {
                self.next += 1;
                Op::NotIn(self.list()?)
            }
            Some((at, Token::Numeric)) => return Err(self.fail(at, ErrorKind::Numeric)),
            Some((at, t)) => return Err(self.fail(at, ErrorKind::BadOperator(t.text()))),
        };
        Ok(Requirement { key, op })
    }
}

impl std::str::FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            text,
            tokens: tokens(text),
            next: 0,
        };
        let mut requirements = Vec::new();
        if parser.peek().is_none() {
            return Ok(Self { requirements });
        }
        loop {
            requirements.push(parser.requirement()?);
            match parser.take() {
                None => return Ok(Self { requirements }),
                Some((_, Token::Comma)) => {}
                Some((at, t)) => return Err(parser.fail(at, ErrorKind::MissingComma(t.text()))),
            }
        }
    }
}

impl Selector {
    /// Whether a pod with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether it selects every pod (no requirement).
    pub fn is_everything(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl Requirement {
    /// Whether `labels` fulfil it.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match &self.op {
            Op::Exists => value.is_some(),
            Op::DoesNotExist => value.is_none(),
            Op::In(values) => value.is_some_and(|v| values.contains(v)),
            Op::NotIn(values) => value.is_none_or(|v| !values.contains(v)),
        }
    }
}

impl fmt::Display for Requirement {
    /// The canonical text: `k`, `!k`, `k=v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |values: &BTreeSet<String>| values.iter().cloned().collect::<Vec<_>>().join(",");
        match &self.op {
            Op::Exists => write!(f, "{}", self.key),
            Op::DoesNotExist => write!(f, "!{}", self.key),
            Op::In(v) if v.len() == 1 => write!(f, "{}={}", self.key, list(v)),
            Op::NotIn(v) if v.len() == 1 => write!(f, "{}!={}", self.key, list(v)),
            Op::In(v) => write!(f, "{} in ({})", self.key, list(v)),
            Op::NotIn(v) => write!(f, "{} notin ({})", self.key, list(v)),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
