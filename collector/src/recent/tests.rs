use super::*;

fn meta(id: &str, ns: &str, pod: &str) -> ContainerMeta {
    ContainerMeta {
        container_id: id.into(),
        namespace: ns.into(),
        pod: pod.into(),
        container: "app".into(),
        ..ContainerMeta::default()
    }
}

fn stamp(millis: u32) -> String {
    format!("2026-01-01T00:00:{:02}.{:09}Z", millis / 1000, millis % 1000)
}

fn lines(out: &[Arc<RecentLine>]) -> Vec<String> {
    out.iter()
        .map(|l| format!("{}/{} {}", l.pod, l.container, l.line))
        .collect()
}

fn settings(lines_per_container: usize, max_bytes: usize) -> RecentSettings {
    RecentSettings {
        lines_per_container,
        max_bytes,
        keep_gone: Duration::from_secs(60),
        follow_buffer: 4,
    }
}

fn ns(namespace: &str) -> Filter {
    Filter {
        namespace: namespace.into(),
        ..Filter::default()
    }
}

#[test]
fn pods_merge_by_time_and_namespaces_stay_apart() {
    let r = Recent::new(RecentSettings::default());
    let (a, b, c) = (
        meta("a", "shop", "web-0"),
        meta("b", "shop", "web-1"),
        meta("c", "bank", "x"),
    );
    r.push(&a, Stream::Stdout, &stamp(1), "a1");
    r.push(&b, Stream::Stdout, &stamp(2), "b2");
    r.push(&c, Stream::Stdout, &stamp(3), "c3");
    r.push(&a, Stream::Stderr, &stamp(4), "a4");
    r.push(&b, Stream::Stdout, &stamp(4), "b4");
    assert_eq!(
        lines(&r.dump(&ns("shop"), usize::MAX)),
        ["web-0/app a1", "web-1/app b2", "web-0/app a4", "web-1/app b4"]
    );
    assert_eq!(lines(&r.dump(&ns("bank"), usize::MAX)), ["x/app c3"]);
    let one_pod = Filter {
        pods: vec!["web-1".into()],
        ..ns("shop")
    };
    assert_eq!(lines(&r.dump(&one_pod, 1)), ["web-1/app b4"]);
    let since = Filter {
        since: Some(stamp(3).parse().unwrap()),
        ..ns("shop")
    };
    assert_eq!(
        lines(&r.dump(&since, usize::MAX)),
        ["web-0/app a4", "web-1/app b4"]
    );
}

#[test]
fn rings_and_the_node_total_are_bounded_and_evictions_counted() {
    let r = Recent::new(settings(3, 10));
    let (a, b) = (meta("a", "shop", "a"), meta("b", "shop", "b"));
    for i in 0..5 {
        r.push(&a, Stream::Stdout, &stamp(i), &format!("a{i}"));
    }
    assert_eq!(
        lines(&r.dump(&ns("shop"), usize::MAX)),
        ["a/app a2", "a/app a3", "a/app a4"]
    );
    assert_eq!((r.bytes(), r.evicted()), (6, 2));
    // b's 6 bytes take the node over 10: of the two biggest rings (6 bytes each), a holds the
    // oldest line and gives it up.
    r.push(&b, Stream::Stdout, &stamp(10), "bbbbbb");
    assert_eq!(
        lines(&r.dump(&ns("shop"), usize::MAX)),
        ["a/app a3", "a/app a4", "b/app bbbbbb"]
    );
    assert_eq!((r.bytes(), r.evicted()), (10, 3));
    // Now b is the biggest (8 bytes against 4): it gives up its oldest.
    r.push(&b, Stream::Stdout, &stamp(11), "bb");
    assert_eq!(
        lines(&r.dump(&ns("shop"), usize::MAX)),
        ["a/app a3", "a/app a4", "b/app bb"]
    );
    assert_eq!((r.bytes(), r.evicted()), (6, 4));
}

#[tokio::test(start_paused = true)]
async fn a_gone_container_is_kept_for_a_while() {
    let r = Recent::new(settings(10, 1000));
    r.push(&meta("a", "shop", "a"), Stream::Stdout, &stamp(1), "a1");
    r.push(&meta("b", "shop", "b"), Stream::Stdout, &stamp(2), "b2");
    let only_b: HashSet<String> = ["b".to_owned()].into();
    r.retain_bound(&only_b);
    tokio::time::advance(Duration::from_secs(59)).await;
    r.retain_bound(&only_b);
    assert_eq!(lines(&r.dump(&ns("shop"), usize::MAX)), ["a/app a1", "b/app b2"]);
    tokio::time::advance(Duration::from_secs(1)).await;
    r.retain_bound(&only_b);
    assert_eq!(lines(&r.dump(&ns("shop"), usize::MAX)), ["b/app b2"]);
    assert_eq!(r.bytes(), 2);
}

#[tokio::test]
async fn a_slow_follower_lags_and_never_holds_the_writer() {
    let r = Recent::new(settings(10, 1000));
    let mut follower = r.subscribe();
    let a = meta("a", "shop", "a");
    // Four fit in the follower's buffer; ten pushes do not wait for it.
    for i in 0..10 {
        r.push(&a, Stream::Stdout, &stamp(i), &format!("a{i}"));
    }
    assert!(matches!(
        follower.recv().await,
        Err(broadcast::error::RecvError::Lagged(6))
    ));
    let next = follower.recv().await.unwrap();
    assert_eq!(next.line, "a6");
}
