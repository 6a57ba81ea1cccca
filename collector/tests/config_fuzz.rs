//! No panic is reachable from any config, and a config that validates always plans.
//!
//! Building a drain from its plan cannot fail (`drain::spawn` takes a `DrainPlan` and returns the
//! drain); what is left to show is that validation and planning agree, and that nothing panics.
//! Property tests, a few seconds in all:
//! * arbitrary text and randomly mutated valid node configs go through `NodeConfig::from_yaml`
//!   (parse and validate) without a panic, and every drain of a config it accepts plans, starts
//!   and encodes a line;
//! * structured drain configs, with each field drawn from values at and past its edges (URLs,
//!   templates, header names and values, TLS material and server names, credentials, delivery
//!   numbers, status lists), go through `DrainConfig::validate`; each one that validates plans
//!   (`DrainConfig::plan`), starts and encodes a line, without a panic.
//!
//! TLS file paths (`caFile`, `certFile`, `keyFile`) are node-local and are read only when a drain
//! is planned, so a valid config may name a file that is missing; they are left out here.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "support/drain.rs"]
mod support;

use std::{collections::BTreeMap, sync::Arc};

use proptest::{prelude::*, test_runner::Config};
use sluice_api::{
    NodeConfig,
    node_config::{
        BasicAuth, DeliveryOptions, DrainConfig, HttpOptions, Redacted, Stream, SyslogFormat, TlsConfig,
        UdpOversize,
    },
};
use sluice_collector::{
    drain::{self, DrainContext},
    metrics::Metrics,
    pipeline::{Batch, LogLine, MsgId},
};

/// A self-signed certificate and its key (PEM), made once.
fn cert_and_key() -> &'static (String, String) {
    static PAIR: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    PAIR.get_or_init(|| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["logs.example.com".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    })
}

/// Mostly `strings`; one time in `1 + weight` an arbitrary short string instead.
fn or_arbitrary(weight: u32, strings: impl Strategy<Value = &'static str>) -> impl Strategy<Value = String> {
    prop_oneof![
        weight => strings.prop_map(str::to_owned),
        1 => ".{0,12}",
    ]
}

/// One of `pool`, or an arbitrary short string.
fn pick(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    or_arbitrary(4, proptest::sample::select(pool))
}

/// Mostly one of `valid`, else one of `edge` or an arbitrary short string: each field is valid
/// often enough that whole configs validate, and is at or past an edge often enough that each
/// check is met.
fn mostly(valid: &'static [&'static str], edge: &'static [&'static str]) -> impl Strategy<Value = String> {
    or_arbitrary(25, mostly_of(valid, edge))
}

/// A drain's URL: mostly one the kind's checks accept (a port for syslog, a path only for HTTP),
/// else with an edge in its scheme, host, port or path, or arbitrary text.
fn url(scheme: &'static str, http: bool) -> impl Strategy<Value = String> {
    let schemes = mostly(&[""], &["ftp", "", "SYSLOG", "Http", "syslog", "https"]);
    let hosts = mostly(
        &["127.0.0.1", "[::1]", "logs.example.com", "169.254.169.254"],
        &[
            "",
            "a..b",
            "ex ample",
            "1.2.3.4.5",
            "[::1",
            "exämple.com",
            "%41",
            "user:pass@logs.example.com",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.com",
        ],
    );
    let ports = mostly(
        &[":514", ":6514", ":8080"],
        &[
            "",
            ":0",
            ":65535",
            ":65536",
            ":-1",
            ":abc",
            ":",
            ":99999999999999999999",
        ],
    );
    let valid_paths: &'static [&'static str] = if http {
        &["", "/", "/ingest", "/in?key=1"]
    } else {
        &[""]
    };
    let paths = mostly(valid_paths, &["/a b", "#frag", "/\r\n", "?", "/%zz", "/ingest"]);
    prop_oneof![
        9 => (schemes, hosts, ports, paths).prop_map(move |(other, h, p, path)| {
            // `mostly(&[""], …)`: mostly the kind's own scheme, sometimes another.
            let s = if other.is_empty() { scheme } else { other.as_str() };
            format!("{s}://{h}{p}{path}")
        }),
        1 => ".{0,40}",
    ]
}

fn template() -> impl Strategy<Value = String> {
    let pieces = mostly(
        &[
            "{namespace}",
            "{pod}",
            "{container}",
            "{node}",
            "{label:app}",
            "x",
            "/",
            "-",
            "é",
        ],
        &["{label:}", "{label:a b}", "{", "}", "{bogus}", "{{", "\u{0}", " "],
    );
    proptest::collection::vec(pieces, 0..4).prop_map(|p| p.concat())
}

fn headers() -> impl Strategy<Value = BTreeMap<String, String>> {
    let names = mostly(
        &["X-Tenant", "Authorization", "Content-Type", "X-Api-Key"],
        &[
            "Host",
            "Bad Header",
            "X-Ünicode",
            "",
            "Content-Length",
            "Transfer-Encoding",
            "X:Colon",
        ],
    );
    let values = mostly(
        &["b", "Bearer t", "é", "application/json"],
        &["", "a\r\nX-Injected: 1", "\u{7f}", " padded "],
    );
    proptest::collection::btree_map(names, values, 0..3)
}

fn pem() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        4 => Just(None),
        4 => Just(Some(cert_and_key().0.clone())),
        1 => Just(Some("garbage".to_owned())),
        1 => Just(Some(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned()
        )),
        1 => Just(Some(String::new())),
    ]
}

fn key() -> impl Strategy<Value = Option<Redacted>> {
    prop_oneof![
        4 => Just(None),
        4 => Just(Some(Redacted(cert_and_key().1.clone()))),
        1 => Just(Some(Redacted(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_owned()
        ))),
        1 => Just(Some(Redacted(String::new()))),
    ]
}

fn tls() -> impl Strategy<Value = Option<TlsConfig>> {
    let names = &[
        "logs.example.com",
        "",
        "1.2.3.4",
        "bad name",
        "[::1]",
        "*.example.com",
        "é.com",
    ];
    let bundles = &["shared", ""];
    proptest::option::of(
        (
            pem(),
            proptest::option::of(pick(bundles)),
            pem(),
            key(),
            proptest::option::of(pick(names)),
            any::<bool>(),
        )
            .prop_map(
                |(ca_pem, ca_bundle, cert_pem, key_pem, server_name, insecure)| TlsConfig {
                    ca_pem,
                    ca_file: None,
                    ca_bundle,
                    cert_pem,
                    key_pem,
                    cert_file: None,
                    key_file: None,
                    server_name,
                    insecure_skip_verify: insecure,
                },
            ),
    )
}

fn http() -> impl Strategy<Value = Option<HttpOptions>> {
    let secrets = &["token", "", "t\nInjected: 1", "é", "a:b"];
    proptest::option::of(
        (
            any::<bool>(),
            headers(),
            proptest::option::of(pick(secrets).prop_map(Redacted)),
            proptest::option::of(
                (pick(secrets), pick(secrets)).prop_map(|(username, password)| BasicAuth {
                    username,
                    password: Redacted(password),
                }),
            ),
            any::<bool>(),
        )
            .prop_map(|(gzip, headers, bearer_token, basic_auth, allow)| HttpOptions {
                gzip,
                headers,
                bearer_token,
                basic_auth,
                allow_credentials_over_http: allow,
            }),
    )
}

fn syslog() -> impl Strategy<Value = SyslogFormat> {
    (
        template(),
        template(),
        template(),
        any::<bool>(),
        mostly_of(&[480, 1472, 9000], &[0, 1, 100, 65_507, 65_535, u32::MAX]),
        any::<bool>(),
    )
        .prop_map(|(app_name, hostname, procid, sd, max, truncate)| SyslogFormat {
            app_name,
            hostname,
            procid,
            structured_data: sd,
            max_datagram_bytes: max,
            udp_oversize: if truncate {
                UdpOversize::Truncate
            } else {
                UdpOversize::Split
            },
        })
}

fn delivery() -> impl Strategy<Value = DeliveryOptions> {
    const LINES: [u32; 3] = [1, 100, 2048];
    const BYTES: [u32; 3] = [1024, 65_536, 1 << 20];
    const EDGE: [u32; 4] = [0, 1, 1023, u32::MAX];
    const MILLIS: [u64; 3] = [1, 100, 10_000];
    const LONG: [u64; 3] = [0, i64::MAX as u64, u64::MAX];
    const STATUSES: [u16; 5] = [400, 404, 413, 422, 500];
    const ODD_STATUSES: [u16; 9] = [0, 99, 100, 200, 302, 599, 600, 1000, u16::MAX];
    (
        mostly_of(&LINES, &EDGE),
        mostly_of(&BYTES, &EDGE),
        mostly_of(&MILLIS, &LONG),
        mostly_of(&MILLIS, &LONG),
        mostly_of(&MILLIS, &LONG),
        proptest::option::of(mostly_of(&LINES, &EDGE)),
        proptest::collection::vec(mostly_of(&STATUSES, &ODD_STATUSES), 0..4),
    )
        .prop_map(
            |(lines, bytes, timeout, initial, max, rate, drop_on_status)| DeliveryOptions {
                batch_max_lines: lines,
                batch_max_bytes: bytes,
                timeout_ms: timeout,
                retry_initial_ms: initial,
                retry_max_ms: max,
                max_lines_per_second: rate,
                drop_on_status,
            },
        )
}

/// Mostly one of `valid`, else one of `edge`.
fn mostly_of<T: Clone + std::fmt::Debug + 'static>(
    valid: &'static [T],
    edge: &'static [T],
) -> impl Strategy<Value = T> {
    prop_oneof![
        24 => proptest::sample::select(valid),
        1 => proptest::sample::select(edge),
    ]
}

/// A drain config: a kind, then fields that mostly suit it (TLS options for the TLS kinds, HTTP
/// options for HTTP), each sometimes at or past an edge.
fn drain_config() -> impl Strategy<Value = DrainConfig> {
    let kinds = proptest::sample::select(
        &[
            ("syslog", false, false),
            ("syslog-tls", true, false),
            ("syslog-udp", false, false),
            ("http", false, true),
            ("https", true, true),
        ][..],
    );
    kinds.prop_flat_map(|(scheme, uses_tls, http_kind)| {
        let names = mostly(&["d", "shop-logs"], &["", "Bad_Name", "-x", "a.b", "é"]);
        let fits = |suits: bool| if suits { 0.8 } else { 0.1 };
        (
            names,
            url(scheme, http_kind),
            proptest::option::weighted(fits(uses_tls), tls()),
            syslog(),
            proptest::option::weighted(fits(http_kind), http()),
            delivery(),
        )
            .prop_map(|(name, url, tls, syslog, http, delivery)| DrainConfig {
                name,
                url,
                tls: tls.flatten(),
                syslog,
                http: http.flatten(),
                delivery,
                owner: None,
            })
    })
}

/// Plan `config`, start its drain as the collector does and encode a line with it; the error if
/// it does not plan.
fn build(rt: &tokio::runtime::Runtime, config: &DrainConfig) -> Result<(), String> {
    let plan = config.plan().map_err(|e| e.to_string())?;
    let _entered = rt.enter();
    let ctx = DrainContext {
        node_name: "node-a".into(),
        metrics: Metrics::new().unwrap(),
        wake: Arc::new(|| {}),
        generation: 1,
        destinations: support::local_receivers(),
        died: None,
    };
    let running = drain::spawn(&plan, ctx);
    let mut encoder = (running.endpoint.new_encoder)();
    let meta = support::meta();
    let message = "m".repeat(3000);
    let line = LogLine {
        meta: &meta,
        stream: Stream::Stdout,
        timestamp: "2026-11-21T15:15:34.165439785Z",
        message: &message,
        id: MsgId { file: 7, offset: 1 },
        truncated: false,
    };
    encoder.encode(&line, &mut Batch::default());
    running.abort();
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A valid node config with a drain of each kind, as YAML: the seed of the mutations.
fn seed_yaml() -> String {
    let drain = |name: &str, url: &str| DrainConfig {
        name: name.into(),
        url: url.into(),
        tls: None,
        syslog: SyslogFormat::default(),
        http: None,
        delivery: DeliveryOptions::default(),
        owner: None,
    };
    let mut https = drain("h", "https://logs.example.com/in");
    https.http = Some(HttpOptions {
        headers: BTreeMap::from([("X-Tenant".into(), "shop".into())]),
        bearer_token: Some(Redacted("t".into())),
        ..HttpOptions::default()
    });
    let mut tls = drain("t", "syslog-tls://logs.example.com:6514");
    tls.tls = Some(TlsConfig {
        ca_pem: Some(cert_and_key().0.clone()),
        server_name: Some("logs.example.com".into()),
        ..TlsConfig::default()
    });
    let config = NodeConfig {
        version: 1,
        drains: vec![
            drain("s", "syslog://127.0.0.1:514"),
            drain("u", "syslog-udp://127.0.0.1:514"),
            https,
            tls,
        ],
        ..NodeConfig::default()
    };
    let yaml = config.to_yaml().unwrap();
    NodeConfig::from_yaml(&yaml).expect("the seed is valid");
    yaml
}

/// An edit of a text: cut a range, insert a string, or repeat a range.
#[derive(Clone, Debug)]
enum Edit {
    Cut(usize, usize),
    Insert(usize, String),
    Repeat(usize, usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let inserts = &[
        "\n",
        ": ",
        "- ",
        "{",
        "}",
        "[",
        "]",
        "'",
        "\"",
        "&a",
        "*a",
        "!!binary",
        "~",
        "0",
        "-1",
        "99999999999999999999",
        "1e400",
        "\t",
        "  ",
        "#",
        "version: 1\n",
        "\u{0}",
    ];
    let edit = prop_oneof![
        (any::<usize>(), 0..64usize).prop_map(|(at, len)| Edit::Cut(at, len)),
        (any::<usize>(), pick(inserts)).prop_map(|(at, s)| Edit::Insert(at, s)),
        (any::<usize>(), 0..200usize).prop_map(|(at, len)| Edit::Repeat(at, len)),
    ];
    proptest::collection::vec(edit, 1..6)
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for edit in edits {
        let at = |i: usize| if bytes.is_empty() { 0 } else { i % bytes.len() };
        match edit {
            Edit::Cut(i, len) => {
                let start = at(*i);
                let end = (start + len).min(bytes.len());
                bytes.drain(start..end);
            }
            Edit::Insert(i, s) => {
                let start = at(*i);
                bytes.splice(start..start, s.bytes());
            }
            Edit::Repeat(i, len) => {
                let start = at(*i);
                let end = (start + len).min(bytes.len());
                let copy = bytes[start..end].to_vec();
                bytes.splice(end..end, copy);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Every drain of a config `from_yaml` accepted plans and builds.
fn accepted_configs_build(rt: &tokio::runtime::Runtime, text: &str) -> Result<(), TestCaseError> {
    if let Ok(config) = NodeConfig::from_yaml(text) {
        for drain in &config.drains {
            let built = build(rt, drain);
            prop_assert!(built.is_ok(), "{drain:?} validated but did not plan: {built:?}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(Config { cases: 300, failure_persistence: None, ..Config::default() })]

    #[test]
    fn arbitrary_text_parses_or_is_refused(text in ".{0,300}") {
        accepted_configs_build(&runtime(), &text)?;
    }

    #[test]
    fn mutated_configs_parse_or_are_refused_and_build_when_accepted(edits in edits()) {
        static SEED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let text = apply(SEED.get_or_init(seed_yaml), &edits);
        accepted_configs_build(&runtime(), &text)?;
    }
}

proptest! {
    #![proptest_config(Config { cases: 1000, failure_persistence: None, ..Config::default() })]

    #[test]
    fn a_drain_that_validates_plans_and_builds(config in drain_config()) {
        if config.validate().is_ok() {
            // The drain as a collector gets it: in a node config that holds the CA bundle its
            // `tls.caBundle` names, with the bundle put into `tls.caPem`.
            let bundle = config.tls.as_ref().and_then(|t| t.ca_bundle.clone());
            let mut node = NodeConfig {
                version: 1,
                ca_bundles: bundle.map(|name| (name, cert_and_key().0.clone())).into_iter().collect(),
                drains: vec![config.clone()],
                ..NodeConfig::default()
            };
            prop_assert!(node.validate().is_ok(), "{config:?} validated alone but not in a node config");
            node.inline_ca_bundles();
            let built = build(&runtime(), &node.drains[0]);
            prop_assert!(built.is_ok(), "{config:?} validated but did not plan: {built:?}");
        }
    }
}
