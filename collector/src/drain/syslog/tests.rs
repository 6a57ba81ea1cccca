use std::collections::BTreeMap;

use prometheus::IntCounter;
use sluice_api::node_config::{DrainConfig, Stream, SyslogFormat, SyslogPlan, TransportPlan, UdpOversize};

use super::*;
use crate::pipeline::{Batch, ContainerMeta, LogLine, MsgId};

/// `format` as a drain's plan has it.
fn plan(format: &SyslogFormat) -> SyslogPlan {
    let drain = DrainConfig {
        syslog: format.clone(),
        ..serde_yaml::from_str("name: d\nurl: syslog://h:514\n").unwrap()
    };
    match drain.plan().unwrap().transport {
        TransportPlan::Tcp(tcp) => tcp.syslog,
        other => panic!("a syslog:// drain planned as {other:?}"),
    }
}

fn meta(namespace: &str) -> ContainerMeta {
    ContainerMeta {
        container_id: "c0ffee".into(),
        namespace: namespace.into(),
        pod: "web-1".into(),
        pod_uid: "u-1".into(),
        container: "app".into(),
        labels: BTreeMap::from([("team".into(), "blue team".into())]),
        node: "node-a".into(),
        revision: 0,
    }
}

fn line<'a>(meta: &'a ContainerMeta, stream: Stream, message: &'a str) -> LogLine<'a> {
    LogLine {
        meta,
        stream,
        timestamp: "2026-11-21T15:15:34.165439785Z",
        message,
        id: MsgId {
            file: 0xab,
            offset: 0x10,
        },
        truncated: false,
    }
}

fn octet(format: &SyslogFormat) -> SyslogEncoder {
    SyslogEncoder::new(SyslogSpec::new(&plan(format), Framing::OctetCounting))
}

fn frames(batch: &Batch) -> Vec<String> {
    batch
        .frames()
        .map(|f| String::from_utf8(f.to_vec()).unwrap())
        .collect()
}

const SD: &str = r#"[kubernetes@32473 namespace="shop" pod="web-1" podUid="u-1" container="app" containerId="c0ffee" node="node-a"]"#;

#[test]
fn stdout_and_stderr_with_octet_counting() {
    let m = meta("shop");
    let mut enc = octet(&SyslogFormat::default());
    let mut batch = Batch::default();
    enc.encode(&line(&m, Stream::Stdout, "hello world"), &mut batch);
    enc.encode(&line(&m, Stream::Stderr, "oops"), &mut batch);
    let out = frames(&batch);
    let msg1 = format!(
        "<14>1 2026-11-21T15:15:34.165439Z node-a shop/web-1 app 00000000000000ab10 {SD} hello world"
    );
    let msg2 =
        format!("<11>1 2026-11-21T15:15:34.165439Z node-a shop/web-1 app 00000000000000ab10 {SD} oops");
    assert_eq!(
        out,
        vec![format!("{} {msg1}", msg1.len()), format!("{} {msg2}", msg2.len())]
    );
}

#[test]
fn docker_host_without_namespace_and_no_structured_data() {
    let m = meta("");
    let format = SyslogFormat {
        structured_data: false,
        ..SyslogFormat::default()
    };
    let mut enc = octet(&format);
    let mut batch = Batch::default();
    let mut l = line(&m, Stream::Stdout, "x");
    l.truncated = true;
    enc.encode(&l, &mut batch);
    enc.encode(&line(&m, Stream::Stdout, ""), &mut batch);
    let msg1 = r#"<14>1 2026-11-21T15:15:34.165439Z node-a web-1 app 00000000000000ab10 [kubernetes@32473 truncated="true"] x"#;
    let msg2 = "<14>1 2026-11-21T15:15:34.165439Z node-a web-1 app 00000000000000ab10 - ";
    assert_eq!(
        frames(&batch),
        vec![format!("{} {msg1}", msg1.len()), format!("{} {msg2}", msg2.len())]
    );
}

#[test]
fn templates_escaping_and_long_fields() {
    let mut m = meta("shop");
    m.pod = "we\"b]\\1".into();
    m.node = "n".repeat(300);
    let format = SyslogFormat {
        app_name: "{label:team}-{container}-{stream}-{pod}{pod}{pod}{pod}{pod}{pod}".into(),
        hostname: "{node}".into(),
        procid: "{podUid}".into(),
        ..SyslogFormat::default()
    };
    let mut enc = octet(&format);
    let mut batch = Batch::default();
    let mut l = line(&m, Stream::Stderr, "m");
    l.truncated = true;
    enc.encode(&l, &mut batch);
    let frame = &frames(&batch)[0];
    let msg = frame.split_once(' ').unwrap().1;
    let fields: Vec<&str> = msg.splitn(7, ' ').collect();
    assert_eq!(fields[2], "n".repeat(255), "HOSTNAME cut to 255");
    assert_eq!(
        fields[3], "blue_team-app-stderr-we\"b]\\1we\"b]\\1we\"b]\\1we\"b]\\",
        "APP-NAME sanitized, 48 bytes"
    );
    assert_eq!(fields[3].len(), 48);
    assert_eq!(fields[4], "u-1");
    let sd_and_msg = fields[6];
    let want_sd = format!(
        r#"[kubernetes@32473 namespace="shop" pod="we\"b\]\\1" podUid="u-1" container="app" containerId="c0ffee" node="{}" truncated="true"] m"#,
        "n".repeat(300)
    );
    assert_eq!(sd_and_msg, want_sd);
}

#[test]
fn cache_follows_metadata_changes() {
    let mut enc = octet(&SyslogFormat {
        structured_data: false,
        ..SyslogFormat::default()
    });
    let mut batch = Batch::default();
    let a = meta("shop");
    enc.encode(&line(&a, Stream::Stdout, "1"), &mut batch);
    let mut b = meta("shop");
    b.pod = "web-2".into();
    enc.encode(&line(&b, Stream::Stdout, "2"), &mut batch);
    let out = frames(&batch);
    assert!(out[0].contains(" shop/web-1 "), "{}", out[0]);
    assert!(out[1].contains(" shop/web-2 "), "{}", out[1]);
}

/// The engine writes new metadata over the old in place (same address, new revision): a changed
/// label reaches the header fields rendered from templates in the very next line.
#[test]
fn a_label_changed_in_place_is_seen() {
    let mut enc = octet(&SyslogFormat {
        app_name: "{label:team}".into(),
        ..SyslogFormat::default()
    });
    let mut batch = Batch::default();
    let mut m = meta("shop");
    m.revision = ContainerMeta::next_revision();
    enc.encode(&line(&m, Stream::Stdout, "1"), &mut batch);
    m = ContainerMeta {
        labels: BTreeMap::from([("team".into(), "red".into())]),
        revision: ContainerMeta::next_revision(),
        ..m.clone()
    };
    enc.encode(&line(&m, Stream::Stdout, "2"), &mut batch);
    let out = frames(&batch);
    assert!(out[0].contains(" node-a blue_team "), "{}", out[0]);
    assert!(out[1].contains(" node-a red "), "{}", out[1]);
}

fn udp(max: usize, oversize: UdpOversize) -> (SyslogEncoder, IntCounter, IntCounter) {
    let split = IntCounter::new("s", "s").unwrap();
    let truncated = IntCounter::new("t", "t").unwrap();
    let framing = Framing::Datagram {
        max,
        oversize,
        split: split.clone(),
        truncated: truncated.clone(),
    };
    (
        SyslogEncoder::new(SyslogSpec::new(&plan(&SyslogFormat::default()), framing)),
        split,
        truncated,
    )
}

#[test]
fn udp_fits_in_one_datagram_without_framing() {
    let (mut enc, split, truncated) = udp(1472, UdpOversize::Split);
    let m = meta("shop");
    let mut batch = Batch::default();
    enc.encode(&line(&m, Stream::Stdout, "short"), &mut batch);
    let want =
        format!("<14>1 2026-11-21T15:15:34.165439Z node-a shop/web-1 app 00000000000000ab10 {SD} short");
    assert_eq!(frames(&batch), vec![want]);
    assert_eq!((split.get(), truncated.get()), (0, 0));
}

#[test]
fn udp_split_into_complete_messages() {
    let (mut enc, split, truncated) = udp(480, UdpOversize::Split);
    let m = meta("shop");
    let text: String = (0..900)
        .map(|i| {
            if i % 7 == 0 {
                'é'
            } else {
                char::from(b'a' + (i % 26) as u8)
            }
        })
        .collect();
    let mut batch = Batch::default();
    enc.encode(&line(&m, Stream::Stdout, &text), &mut batch);
    let out = frames(&batch);
    let n = out.len();
    assert!(n >= 3, "{n} parts");
    let mut joined = String::new();
    for (i, frame) in out.iter().enumerate() {
        assert!(frame.len() <= 480, "part {i} is {} bytes", frame.len());
        let head = format!(
            "<14>1 2026-11-21T15:15:34.165439Z node-a shop/web-1 app 00000000000000ab10 {} part=\"{}/{n}\"] ",
            SD.trim_end_matches(']'),
            i + 1
        );
        assert!(frame.starts_with(&head), "{frame}");
        joined.push_str(&frame[head.len()..]);
    }
    assert_eq!(joined, text);
    assert_eq!((split.get(), truncated.get()), (1, 0));
}

#[test]
fn udp_truncate_keeps_one_marked_datagram() {
    let (mut enc, split, truncated) = udp(480, UdpOversize::Truncate);
    let m = meta("shop");
    let text = "€".repeat(400);
    let mut batch = Batch::default();
    enc.encode(&line(&m, Stream::Stdout, &text), &mut batch);
    let out = frames(&batch);
    assert_eq!(out.len(), 1);
    let head = format!(
        "<14>1 2026-11-21T15:15:34.165439Z node-a shop/web-1 app 00000000000000ab10 {} truncated=\"true\"] ",
        SD.trim_end_matches(']')
    );
    assert!(out[0].starts_with(&head), "{}", out[0]);
    let kept = &out[0][head.len()..];
    assert!(
        out[0].len() <= 480 && out[0].len() > 477,
        "{} bytes",
        out[0].len()
    );
    assert!(text.starts_with(kept));
    assert_eq!((split.get(), truncated.get()), (0, 1));
}

#[test]
fn udp_split_without_structured_data_still_marks_parts() {
    let split = IntCounter::new("s", "s").unwrap();
    let truncated = IntCounter::new("t", "t").unwrap();
    let framing = Framing::Datagram {
        max: 480,
        oversize: UdpOversize::Split,
        split: split.clone(),
        truncated,
    };
    let format = SyslogFormat {
        structured_data: false,
        ..SyslogFormat::default()
    };
    let mut enc = SyslogEncoder::new(SyslogSpec::new(&plan(&format), framing));
    let m = meta("shop");
    let text = "z".repeat(1000);
    let mut batch = Batch::default();
    enc.encode(&line(&m, Stream::Stdout, &text), &mut batch);
    let out = frames(&batch);
    assert_eq!(out.len(), 3);
    let head = |i: usize| {
        format!(
            "<14>1 2026-11-21T15:15:34.165439Z node-a shop/web-1 app 00000000000000ab10 [kubernetes@32473 part=\"{i}/3\"] "
        )
    };
    let mut joined = String::new();
    for (i, frame) in out.iter().enumerate() {
        assert!(frame.starts_with(&head(i + 1)) && frame.len() <= 480, "{frame}");
        joined.push_str(&frame[head(i + 1).len()..]);
    }
    assert_eq!(joined, text);
    assert_eq!(split.get(), 1);
}
