use std::collections::{BTreeMap, BTreeSet};

use super::{glob::glob_match, *};

const GOOD: &str = r#"
version: 1
node: node-a
drains:
  - name: central
    url: syslog-tls://logs.example.com:6514
    tls: { serverName: logs.example.com }
  - name: web-http
    url: https://collector.example.com/ingest
    http: { gzip: true }
containers:
  - id: docker://0123abcd
    namespace: shop
    pod: web-1
    podUid: 5e2f
    container: nginx
    drains: [central]
selectors:
  - name: "web-*"
    labels: { tier: front }
    drains: [central, web-http]
"#;

fn error_field(text: &str) -> String {
    match NodeConfig::from_yaml(text) {
        Err(ConfigError::Invalid { field, .. }) => field,
        Err(ConfigError::Parse(e)) => format!("parse: {e}"),
        Ok(_) => "accepted".into(),
    }
}

#[test]
fn good_config_round_trips() {
    let config = NodeConfig::from_yaml(GOOD).expect("valid");
    assert_eq!(config.drains.len(), 2);
    assert_eq!(config.containers[0].streams, Stream::all());
    assert_eq!(
        config.containers[0].runtime_id(),
        Ok(RuntimeId::Docker("0123abcd".into()))
    );
    let again = NodeConfig::from_yaml(&config.to_yaml().expect("render")).expect("re-parse");
    assert_eq!(again, config);
}

#[test]
fn bad_configs_name_the_field() {
    let cases = [
        (GOOD.replace("version: 1", "version: 2"), "version"),
        (
            GOOD.replace("syslog-tls://logs.example.com:6514", "syslog://logs.example.com"),
            "drains[0].url",
        ),
        (
            GOOD.replace(
                "syslog-tls://logs.example.com:6514",
                "syslog://logs.example.com:6514",
            ),
            "drains[0].tls",
        ),
        (
            GOOD.replace("syslog-tls://logs.example.com:6514", "ftp://x:1"),
            "drains[0].url",
        ),
        (GOOD.replace("name: web-http", "name: central"), "drains[1].name"),
        (GOOD.replace("name: web-http", "name: Web_Http"), "drains[1].name"),
        (
            GOOD.replace("drains: [central]", "drains: [nowhere]"),
            "containers[0].drains",
        ),
        (
            GOOD.replace("docker://0123abcd", "rkt://0123abcd"),
            "containers[0].id",
        ),
        (
            GOOD.replace("name: \"web-*\"\n    labels: { tier: front }\n", ""),
            "selectors[0]",
        ),
    ];
    for (text, field) in cases {
        assert_eq!(error_field(&text), field, "for config:\n{text}");
    }
}

#[test]
fn unknown_fields_are_rejected_with_their_path() {
    let text = GOOD.replace("gzip: true", "gzip: true, gzipp: true");
    let message = NodeConfig::from_yaml(&text)
        .expect_err("unknown field")
        .to_string();
    assert!(message.contains("gzipp"), "{message}");
    assert!(message.contains("drains[1]"), "{message}");
}

#[test]
fn drain_urls() {
    assert_eq!(
        DrainKind::parse("syslog://[::1]:514"),
        Ok(DrainKind::SyslogTcp {
            host: "::1".into(),
            port: 514
        })
    );
    assert_eq!(
        DrainKind::parse("syslog-udp://10.0.0.1:514/"),
        Ok(DrainKind::SyslogUdp {
            host: "10.0.0.1".into(),
            port: 514
        })
    );
    assert!(DrainKind::parse("syslog://h:70000").is_err());
    assert!(DrainKind::parse("syslog://user:pw@h:514").is_err());
    assert!(DrainKind::parse("syslog://h:514/path").is_err());
    assert_eq!(
        DrainKind::parse("https://h/x"),
        Ok(DrainKind::Http {
            url: "https://h/x".into(),
            tls: true
        })
    );
}

#[test]
fn selector_globs_and_labels() {
    let s = SelectorConfig {
        name: Some("web-*-?".into()),
        labels: [("tier".to_string(), "front".to_string())].into(),
        streams: Stream::all(),
        drains: vec!["d".into()],
    };
    let front: BTreeMap<_, _> = [("tier".to_string(), "front".to_string())].into();
    assert!(s.matches("/web-blue-1", &front));
    assert!(!s.matches("web-blue-12", &front));
    assert!(!s.matches("web-blue-1", &BTreeMap::new()));
    assert!(glob_match(b"*", b""));
    assert!(glob_match(b"a*b*c", b"axxbyyc"));
    assert!(!glob_match(b"a*b*c", b"axxbyy"));
}

#[test]
fn secrets_are_redacted_in_debug() {
    let tls = TlsConfig {
        key_pem: Some(Redacted("PRIVATE".into())),
        ..Default::default()
    };
    assert!(!format!("{tls:?}").contains("PRIVATE"));
    let drain = DrainConfig {
        name: "d".into(),
        url: "https://h/ingest?api_key=K3Y".into(),
        tls: Some(tls),
        syslog: SyslogFormat::default(),
        http: Some(HttpOptions {
            headers: BTreeMap::from([("X-Api-Key".into(), "H34DER".into())]),
            bearer_token: Some(Redacted("T0KEN".into())),
            basic_auth: Some(BasicAuth {
                username: "u".into(),
                password: Redacted("PASSW0RD".into()),
            }),
            ..HttpOptions::default()
        }),
        delivery: DeliveryOptions::default(),
        owner: None,
    };
    let config = NodeConfig {
        drains: vec![drain],
        ..NodeConfig::default()
    };
    let text = format!("{config:?}");
    for secret in ["PRIVATE", "K3Y", "H34DER", "T0KEN", "PASSW0RD"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    assert!(
        text.contains("X-Api-Key") && text.contains("https://h/ingest?***"),
        "{text}"
    );
}

#[test]
fn credentials_over_plain_http_need_an_explicit_yes() {
    let with = |url: &str, http: &str| {
        GOOD.replace("https://collector.example.com/ingest", url)
            .replace("http: { gzip: true }", http)
    };
    let token = "http: { bearerToken: t }";
    let basic = "http: { basicAuth: { username: u, password: p } }";
    let header = "http: { headers: { authorization: 'Bearer t' } }";
    for http in [token, basic, header] {
        assert_eq!(
            error_field(&with("http://c.example.com/in", http)),
            "drains[1].http",
            "{http}"
        );
        assert_eq!(
            error_field(&with("https://c.example.com/in", http)),
            "accepted",
            "{http}"
        );
        let allowed = http.replacen("{ ", "{ allowCredentialsOverHttp: true, ", 1);
        assert_eq!(
            error_field(&with("http://c.example.com/in", &allowed)),
            "accepted",
            "{allowed}"
        );
    }
    assert_eq!(
        error_field(&with(
            "http://c.example.com/in",
            "http: { headers: { x-tenant: shop } }"
        )),
        "accepted"
    );
}

#[test]
fn cri_names_that_would_leave_the_log_directory_are_refused() {
    let cri = GOOD.replace("docker://0123abcd", "containerd://0123abcd");
    assert_eq!(error_field(&cri), "accepted");
    for (from, to, field) in [
        ("namespace: shop", "namespace: \"..\"", "containers[0].namespace"),
        ("pod: web-1", "pod: \"a/../../etc\"", "containers[0].pod"),
        ("podUid: 5e2f", "podUid: \"\"", "containers[0].podUid"),
        ("container: nginx", "container: \".\"", "containers[0].container"),
    ] {
        assert_eq!(error_field(&cri.replace(from, to)), field, "{to}");
    }
}

/// A self-signed CA certificate (EC P-256, valid until 2126), for checks that parse X.509.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBezCCASGgAwIBAgIUddovUmeBOnZzEp1W2VaJjOpaRcgwCgYIKoZIzj0EAwIw
EjEQMA4GA1UEAwwHdGVzdC1jYTAgFw0yNjEyMDMwODAwMjRaGA8yMTI2MTEwOTA4
MDAyNFowEjEQMA4GA1UEAwwHdGVzdC1jYTBZMBMGByqGSM49AgEGCCqGSM49AwEH
A0IABKTOgVzgNnkXFjIIQPJk/58pIpxSfCLxB4GFMyYkAA4zy4Mg5hN+onJ3F3C3
kBTd2rLPG6Ma5qt+HFedkwPd/ymjUzBRMB0GA1UdDgQWBBRwFFP4ZBxt++RLCfx2
aST7mLccVzAfBgNVHSMEGDAWgBRwFFP4ZBxt++RLCfx2aST7mLccVzAPBgNVHRMB
Af8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQD+2I8MmcE6BtGCq7NpCQE3XBUB
UAZVMLcytISS538SUgIgeF/uW3hpZ17voXJiTw/hQMLIdE/k0ls5id2sQeA9O4E=
-----END CERTIFICATE-----
";

#[test]
fn shared_ca_bundles_are_checked_and_inlined() {
    let indented: String = CA_PEM.lines().map(|l| format!("    {l}\n")).collect();
    let config = |bundle: &str, first_tls: &str| {
        format!(
            "version: 1\ncaBundles:\n  shared: |\n{bundle}drains:\n  - name: a\n    url: syslog-tls://a.example:6514\n    \
             tls: {first_tls}\n  - name: b\n    url: https://b.example/in\n    tls: {{ caBundle: shared }}\n"
        )
    };
    let good = NodeConfig::from_yaml(&config(&indented, "{ caBundle: shared }")).expect("valid");
    assert!(good.ca_bundles.is_empty(), "inlined");
    for drain in &good.drains {
        let tls = drain.tls.as_ref().expect("tls");
        assert_eq!(
            (tls.ca_pem.as_deref(), tls.ca_bundle.as_deref()),
            (Some(CA_PEM), None)
        );
    }
    let cases = [
        (config(&indented, "{ caBundle: other }"), "drains[0].tls.caBundle"),
        (
            config(&indented, "{ caBundle: shared, caPem: x }"),
            "drains[0].tls",
        ),
        (
            config("    not a certificate\n", "{ caBundle: shared }"),
            "caBundles.shared",
        ),
    ];
    for (text, field) in cases {
        assert_eq!(error_field(&text), field, "{text}");
    }
}

#[test]
fn max_line_bytes_is_bounded() {
    let with = |n: u64| format!("{GOOD}limits: {{ maxLineBytes: {n} }}\n");
    assert_eq!(error_field(&with(16 * 1024 * 1024)), "accepted");
    assert_eq!(error_field(&with(16 * 1024 * 1024 + 1)), "limits.maxLineBytes");
    assert_eq!(error_field(&with(1023)), "limits.maxLineBytes");
}

#[test]
fn drains_name_the_pod_labels_they_carry() {
    let drain = |url: &str, app_name: &str| {
        let mut d: DrainConfig = serde_yaml::from_str(&format!("name: d\nurl: {url}\n")).expect("drain");
        d.syslog.app_name = app_name.into();
        d
    };
    let syslog = drain("syslog://h:514", "{label:team}/{pod}");
    assert_eq!(syslog.labels_used(), Some(BTreeSet::from(["team".to_owned()])));
    assert_eq!(
        drain("syslog://h:514", "{pod}").labels_used(),
        Some(BTreeSet::new())
    );
    assert_eq!(
        drain("https://h/in", "{pod}").labels_used(),
        None,
        "JSON lines carry every label"
    );
}
