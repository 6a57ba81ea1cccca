//! Drift and shape checks of the generated CRDs (the API server's own acceptance of them is tested
//! against the real harness in `operator/tests/schema.rs`).

use super::*;

/// `crds/` must be exactly what `crdgen` writes from the current types.
#[test]
fn committed_crds_match_the_types() {
    for (file, crd) in all() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crds")
            .join(file);
        let committed = std::fs::read_to_string(&path).expect("crds/ file is committed");
        let generated = serde_yaml::to_string(&crd).expect("CRD serializes");
        assert!(
            committed.ends_with(&generated),
            "{} is stale: run `cargo run -p sluice-api --features crd --bin crdgen`",
            path.display()
        );
    }
}

#[test]
fn both_kinds_are_namespaced_with_a_status_subresource() {
    for (_, crd) in all() {
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.group, GROUP);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, VERSION);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
    }
}

#[test]
fn selector_matching_follows_kubernetes_semantics() {
    let labels: std::collections::BTreeMap<String, String> = [
        ("app".to_owned(), "web".to_owned()),
        ("tier".to_owned(), "front".to_owned()),
    ]
    .into();
    let req = |key: &str, operator, values: &[&str]| binding::SelectorRequirement {
        key: key.into(),
        operator,
        values: values.iter().map(|v| (*v).to_owned()).collect(),
    };
    let cases = [
        (PodSelector::default(), true),
        (
            PodSelector {
                match_labels: [("app".into(), "web".into())].into(),
                ..Default::default()
            },
            true,
        ),
        (
            PodSelector {
                match_labels: [("app".into(), "db".into())].into(),
                ..Default::default()
            },
            false,
        ),
        (
            PodSelector {
                match_expressions: vec![req("tier", SelectorOperator::In, &["front", "x"])],
                ..Default::default()
            },
            true,
        ),
        (
            PodSelector {
                match_expressions: vec![req("tier", SelectorOperator::NotIn, &["front"])],
                ..Default::default()
            },
            false,
        ),
        (
            PodSelector {
                match_expressions: vec![req("zone", SelectorOperator::NotIn, &["a"])],
                ..Default::default()
            },
            true,
        ),
        (
            PodSelector {
                match_expressions: vec![req("app", SelectorOperator::Exists, &[])],
                ..Default::default()
            },
            true,
        ),
        (
            PodSelector {
                match_expressions: vec![req("app", SelectorOperator::DoesNotExist, &[])],
                ..Default::default()
            },
            false,
        ),
    ];
    for (i, (selector, expected)) in cases.into_iter().enumerate() {
        assert_eq!(selector.matches(&labels), expected, "case {i}: {selector:?}");
    }
}
