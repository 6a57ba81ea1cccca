use proptest::prelude::*;

use super::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn parse(text: &str) -> Selector {
    text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn kind(text: &str) -> ErrorKind {
    text.parse::<Selector>().expect_err(text).kind
}

#[test]
fn matching_as_kubernetes_does() {
    let web = labels(&[("app", "web"), ("tier", "front"), ("example.com/team", "a")]);
    let db = labels(&[("app", "db")]);
    let none = labels(&[]);
    // (selector, matches web, matches db, matches a pod without labels)
    let table = [
        ("", true, true, true),
        ("app=web", true, false, false),
        ("app==web", true, false, false),
        ("app = web", true, false, false),
        ("app!=web", false, true, true),
        ("app in (web, db)", true, true, false),
        ("app in(web)", true, false, false),
        ("app notin (web)", false, true, true),
        ("tier", true, false, false),
        ("!tier", false, true, true),
        ("app=web,tier=front", true, false, false),
        ("app=web, tier=back", false, false, false),
        ("example.com/team=a", true, false, false),
        ("app,!tier", false, true, false),
        ("app=", false, false, false),
        ("app notin (), x", false, false, false),
    ];
    for (text, w, d, n) in table {
        if text.contains("()") {
            assert_eq!(kind(text), ErrorKind::EmptyList, "{text}");
            continue;
        }
        let s = parse(text);
        assert_eq!(
            (s.matches(&web), s.matches(&db), s.matches(&none)),
            (w, d, n),
            "{text}"
        );
    }
    assert!(parse("").is_everything());
    assert!(parse("  ").is_everything());
    assert!(parse("a=").matches(&labels(&[("a", "")])));
    assert!(parse("a in (x,)").matches(&labels(&[("a", "")])));
}

#[test]
fn bad_selectors_say_what_and_where() {
    assert_eq!(kind("app=web,"), ErrorKind::MissingKey);
    assert_eq!(kind(",app"), ErrorKind::MissingKey);
    assert_eq!(kind("app in web"), ErrorKind::MissingOpenParen);
    assert_eq!(kind("app in (web"), ErrorKind::UnclosedList);
    assert_eq!(kind("app in (a b)"), ErrorKind::UnclosedList);
    assert_eq!(kind("app in ()"), ErrorKind::EmptyList);
    assert_eq!(kind("a>1"), ErrorKind::Numeric);
    assert_eq!(kind("app=web tier=x"), ErrorKind::MissingComma("tier".into()));
    assert_eq!(kind("app within (x)"), ErrorKind::BadOperator("within".into()));
    assert_eq!(kind("-app=x"), ErrorKind::BadKey("-app".into()));
    assert_eq!(kind("Example.com/a=x"), ErrorKind::BadKey("Example.com/a".into()));
    assert_eq!(
        kind(&format!("{}=x", "a".repeat(64))),
        ErrorKind::BadKey("a".repeat(64))
    );
    assert_eq!(kind("app=we/b"), ErrorKind::BadValue("we/b".into()));
    assert_eq!(kind("app=(x)"), ErrorKind::BadValue("(".into()));
    let e = "app=web,,x".parse::<Selector>().unwrap_err();
    assert_eq!((e.at, e.kind.clone()), (8, ErrorKind::MissingKey));
    assert_eq!(
        e.to_string(),
        "label selector \"app=web,,x\": a label key is missing (at character 8)"
    );
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9]", "[a-zA-Z0-9][a-zA-Z0-9._-]{0,10}[a-zA-Z0-9]",]
}

fn key() -> impl Strategy<Value = String> {
    (
        proptest::option::of("[a-z0-9]{1,5}(\\.[a-z0-9]{1,5}){0,2}"),
        name(),
    )
        .prop_map(|(prefix, name)| prefix.map_or(name.clone(), |p| format!("{p}/{name}")))
        // `in`/`notin` as keys are fine, but not as the value of a bare requirement's neighbour.
        .prop_filter("a keyword", |k| k != "in" && k != "notin")
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), name()]
}

fn op() -> impl Strategy<Value = Op> {
    let values = || proptest::collection::btree_set(value(), 1..4);
    prop_oneof![
        Just(Op::Exists),
        Just(Op::DoesNotExist),
        values().prop_map(Op::In),
        values().prop_map(Op::NotIn),
    ]
}

fn selector() -> impl Strategy<Value = Selector> {
    proptest::collection::vec((key(), op()).prop_map(|(key, op)| Requirement { key, op }), 0..5)
        .prop_map(|requirements| Selector { requirements })
}

proptest! {
    /// The canonical text parses back to the same selector, with any spacing around tokens.
    #[test]
    fn text_round_trips(s in selector(), spaced in any::<bool>()) {
        let mut text = s.to_string();
        if spaced {
            text = text.replace(',', " , ").replace('(', " ( ").replace("!=", " != ");
        }
        prop_assert_eq!(text.parse::<Selector>(), Ok(s));
    }

    /// A pod matches the selector of its own labels (`k=v` each, and `k`, and `k notin` of
    /// other values); adding `!k` or `k!=v` for one of them makes it not match.
    #[test]
    fn a_pod_matches_its_own_labels(
        pod in proptest::collection::btree_map(key(), value(), 1..5),
        other in "[a-z]{1,3}-other",
    ) {
        let own = pod
            .iter()
            .flat_map(|(k, v)| [format!("{k}={v}"), k.clone(), format!("{k} notin ({other})")])
            .collect::<Vec<_>>()
            .join(",");
        prop_assert!(parse(&own).matches(&pod), "{}", own);
        let (k, v) = pod.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap_or_default();
        for extra in [format!("!{k}"), format!("{k}!={v}"), format!("{k} in ({other})")] {
            let text = format!("{own},{extra}");
            prop_assert!(!parse(&text).matches(&pod), "{}", text);
        }
    }
}
