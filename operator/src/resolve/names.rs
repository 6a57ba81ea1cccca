//! The names drains get in node configs, and the content hash used for names and configs.
//!
//! Invariant: a drain's name depends only on its own `(namespace, name)` and the set of drains it
//! is rendered with (to break collisions), never on their settings: the collector keys its cursors
//! by it.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::ObjKey;

/// The longest name a drain gets: a DNS label.
const MAX_NAME: usize = 63;

/// The name a tenant drain gets in node configs: `<namespace>-<name>`, or, when that is longer
/// than a DNS label allows, a shortened form with a hash suffix.
pub fn node_drain_name(namespace: &str, name: &str) -> String {
    let plain = format!("{namespace}-{name}");
    if plain.len() <= MAX_NAME {
        return plain;
    }
    hashed_name(&plain, namespace, name)
}

fn hashed_name(plain: &str, namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    let suffix: String = digest.iter().take(4).map(|byte| format!("{byte:02x}")).collect();
    format!("{}-{suffix}", plain[..54].trim_end_matches('-'))
}

/// Node-config names for drain keys; `<ns>-<name>` is ambiguous (`a-b`/`c` vs `a`/`b-c`), so
/// keys that would collide fall back to the hashed form.
pub fn node_drain_names<'a>(keys: impl Iterator<Item = &'a ObjKey>) -> BTreeMap<ObjKey, String> {
    let mut names: BTreeMap<ObjKey, String> = keys
        .map(|key| (key.clone(), node_drain_name(&key.namespace, &key.name)))
        .collect();
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for name in names.values() {
        *count.entry(name.clone()).or_default() += 1;
    }
    for (ObjKey { namespace, name }, rendered) in names.iter_mut() {
        if count[rendered.as_str()] > 1 {
            let long = format!("{namespace}-{name}-{}", "x".repeat(MAX_NAME));
            *rendered = hashed_name(&long, namespace, name);
        }
    }
    names
}

/// The hex SHA-256 of a text: of a rendered config (written into the Secret's annotation and
/// compared before every write), of a CA bundle (its name in `caBundles`), of a long node name.
pub fn content_hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_drain_names_are_dns_labels_and_unambiguous() {
        assert_eq!(node_drain_name("shop", "logs"), "shop-logs");
        let long = node_drain_name(&"n".repeat(40), &"d".repeat(40));
        assert!(long.len() <= 63, "{long}");
        assert_ne!(long, node_drain_name(&"n".repeat(40), &"e".repeat(40)));
        // `a-b`/`c` and `a`/`b-c` would both be `a-b-c`: both get distinct hashed names.
        let keys = [ObjKey::new("a-b", "c"), ObjKey::new("a", "b-c")];
        let names = node_drain_names(keys.iter());
        assert_ne!(names[&keys[0]], names[&keys[1]]);
        for n in names.values() {
            assert!(n.len() <= 63 && !n.ends_with('-'), "{n}");
        }
    }
}
