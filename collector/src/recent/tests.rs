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

fn labelled(id: &str, ns: &str, pod: &str, labels: &[(&str, &str)]) -> ContainerMeta {
    ContainerMeta {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..meta(id, ns, pod)
    }
}

fn selected(namespace: &str, selector: &str) -> Filter {
    Filter {
        selector: Some(selector.parse().unwrap()),
        ..ns(namespace)
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
    assert_eq!((next.arrival, next.line.line.as_str()), (7, "a6"));
}

#[tokio::test(start_paused = true)]
async fn a_selector_matches_a_gone_pods_labels_until_it_is_forgotten() {
    let r = Recent::new(settings(10, 1000));
    let web = labelled("w", "shop", "web-0", &[("app", "web"), ("tier", "front")]);
    let db = labelled("d", "shop", "db-0", &[("app", "db")]);
    r.push(&web, Stream::Stdout, &stamp(1), "w1");
    r.push(&db, Stream::Stdout, &stamp(2), "d2");
    r.push(&web, Stream::Stdout, &stamp(3), "w3");
    // Labels count once per container: 6 bytes of lines, app=web,tier=front (15) + app=db (5).
    assert_eq!(r.bytes(), 6 + 15 + 5);
    // web-0 is deleted: its container is no longer bound, its labels stay with its lines.
    r.retain_bound(&["d".to_owned()].into());
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(
        lines(&r.dump(&selected("shop", "app=web"), usize::MAX)),
        ["web-0/app w1", "web-0/app w3"]
    );
    assert_eq!(
        lines(&r.dump(&selected("shop", "app in (web,db),tier notin (back)"), usize::MAX)),
        ["web-0/app w1", "db-0/app d2", "web-0/app w3"]
    );
    assert_eq!(
        lines(&r.dump(&selected("shop", "!tier"), usize::MAX)),
        ["db-0/app d2"]
    );
    assert_eq!(
        lines(&r.dump(&selected("bank", "app=web"), usize::MAX)),
        Vec::<String>::new()
    );
    tokio::time::advance(Duration::from_secs(30)).await;
    r.retain_bound(&["d".to_owned()].into());
    assert_eq!(
        lines(&r.dump(&selected("shop", "app"), usize::MAX)),
        ["db-0/app d2"]
    );
    assert_eq!(r.bytes(), 2 + 5);
}

#[test]
fn changed_labels_apply_to_the_whole_ring() {
    let r = Recent::new(settings(10, 1000));
    r.push(
        &labelled("w", "shop", "web-0", &[("app", "web")]),
        Stream::Stdout,
        &stamp(1),
        "w1",
    );
    let relabelled = ContainerMeta {
        revision: 5,
        ..labelled("w", "shop", "web-0", &[("app", "web2")])
    };
    r.push(&relabelled, Stream::Stdout, &stamp(2), "w2");
    assert_eq!(
        lines(&r.dump(&selected("shop", "app=web"), usize::MAX)),
        Vec::<String>::new()
    );
    assert_eq!(
        lines(&r.dump(&selected("shop", "app=web2"), usize::MAX)),
        ["web-0/app w1", "web-0/app w2"]
    );
    assert_eq!(r.bytes(), 4 + 7);
}

/// What a follow gets: the replayed lines, then those on its channel (until it is empty).
fn followed(start: &mut FollowStart, filter: &Filter) -> Vec<String> {
    let mut out: Vec<String> = start.replay.iter().map(|f| f.line.line.clone()).collect();
    while let Ok(f) = start.receiver.try_recv() {
        if filter.matches(&f.labels, &f.line) {
            out.push(f.line.line.clone());
        }
    }
    out
}

#[test]
fn a_follow_resumed_after_its_cursor_gets_every_line_once() {
    let r = Recent::new(settings(100, 10_000));
    let (web, db) = (
        labelled("w", "shop", "web-0", &[("app", "web")]),
        labelled("d", "shop", "db-0", &[("app", "db")]),
    );
    let filter = selected("shop", "app=web");
    r.push(&web, Stream::Stdout, &stamp(1), "w1");
    let mut first = r.follow(&filter, None, 100).unwrap();
    assert!(first.replay.is_empty());
    r.push(&web, Stream::Stdout, &stamp(2), "w2");
    r.push(&db, Stream::Stdout, &stamp(3), "d3");
    r.push(&web, Stream::Stdout, &stamp(4), "w4");
    // The first follow looks at w2 and d3, then ends (its deadline) before taking w4.
    let mut cursor = Cursor {
        epoch: r.epoch(),
        arrival: first.arrival,
    };
    for want in ["w2", "d3"] {
        let f = first.receiver.try_recv().unwrap();
        assert_eq!(f.line.line, want);
        cursor.arrival = f.arrival;
    }
    drop(first);
    // Read while no follow runs.
    r.push(&web, Stream::Stdout, &stamp(5), "w5");
    r.push(&db, Stream::Stdout, &stamp(6), "d6");
    let mut second = r.follow(&filter, Some(cursor), 100).unwrap();
    r.push(&web, Stream::Stdout, &stamp(7), "w7");
    assert_eq!(followed(&mut second, &filter), ["w4", "w5", "w7"]);
    assert_eq!(second.skipped, 0);
    // A limit keeps the newest, and says how many it left out.
    let mut limited = r.follow(&filter, Some(cursor), 2).unwrap();
    assert_eq!(
        (followed(&mut limited, &filter), limited.skipped),
        (vec!["w5".to_owned(), "w7".to_owned()], 1)
    );
    // Another process's cursor is refused.
    let stale = Cursor {
        epoch: r.epoch() ^ 1,
        arrival: 1,
    };
    assert!(r.follow(&filter, Some(stale), 100).is_err());
    assert_eq!(
        "12-34".parse::<Cursor>(),
        Ok(Cursor {
            epoch: 12,
            arrival: 34
        })
    );
    assert_eq!(
        Cursor {
            epoch: 12,
            arrival: 34
        }
        .to_string(),
        "12-34"
    );
    assert!("12".parse::<Cursor>().is_err());
}
