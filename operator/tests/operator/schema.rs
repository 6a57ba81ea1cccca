//! The API server enforces the generated schema and CEL rules: each bad object is rejected with
//! the expected message; good ones are accepted.

use anyhow::{Result, bail};
use serde_json::{Value, json};
use sluice_api::crd::{LogBinding, LogDrain};

use crate::env_or_skip;

fn drain(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogDrain", "metadata": {"name": name}, "spec": spec})
}

fn binding(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "LogBinding", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn bad_drains_are_rejected_with_a_clear_message() -> Result<()> {
    let env = env_or_skip!("schema-drains");
    let bad = [
        (
            drain("d1", json!({"url": "tcp://logs.example.com:514"})),
            "url must start with syslog://",
        ),
        (
            drain("d2", json!({"url": "syslog://logs.example.com"})),
            "a syslog URL is scheme://host:port",
        ),
        (
            drain("d3", json!({"url": "syslog://logs.example.com:0"})),
            "port from 1 to 65535",
        ),
        (
            drain("d4", json!({"url": "syslog-tls://logs.example.com:65536"})),
            "port from 1 to 65535",
        ),
        (
            drain("d5", json!({"url": "syslog://logs.example.com:514/path"})),
            "no path",
        ),
        (
            drain("d6", json!({"url": "https://user:pw@logs.example.com/"})),
            "credentials do not belong in the url",
        ),
        (
            drain("d7", json!({"url": "https://logs.example.com:99999/"})),
            "port from 1 to 65535",
        ),
        (
            drain("d8", json!({"url": "syslog://h:514", "tls": {"serverName": "h"}})),
            "tls settings need a syslog-tls:// or https:// url",
        ),
        (
            drain(
                "d9",
                json!({"url": "syslog://h:514", "credentials": {"secretName": "s", "bearerTokenKey": "t"}}),
            ),
            "credentials are for http:// and https:// drains",
        ),
        (
            drain(
                "d10",
                json!({"url": "https://h/", "credentials": {"secretName": "s", "usernameKey": "u"}}),
            ),
            "usernameKey and passwordKey go together",
        ),
        (
            drain(
                "d11",
                json!({"url": "https://h/", "credentials": {"secretName": "s", "bearerTokenKey": "t", "usernameKey": "u", "passwordKey": "p"}}),
            ),
            "give either bearerTokenKey, or usernameKey and passwordKey",
        ),
        (
            drain(
                "d12",
                json!({"url": "https://h/", "tls": {"insecureSkipVerify": true, "ca": {"name": "ca", "key": "ca.crt"}}}),
            ),
            "a CA is pointless when insecureSkipVerify",
        ),
        (
            drain(
                "d13",
                json!({"url": "syslog-udp://h:514", "http": {"gzip": true}}),
            ),
            "http settings need an http:// or https:// url",
        ),
        (
            drain(
                "d14",
                json!({"url": "syslog://h:514", "rateLimit": {"linesPerSecond": 0}}),
            ),
            "linesPerSecond",
        ),
        (
            drain("Bad_Name", json!({"url": "syslog://h:514"})),
            "a LogDrain name must be a DNS label",
        ),
    ];
    let mut failures = Vec::new();
    for (object, expected) in bad {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        match env.apply::<LogDrain>(&env.tenant, object).await {
            Ok(_) => failures.push(format!("{name}: accepted, expected rejection with {expected:?}")),
            Err(kube::Error::Api(status)) if status.message.contains(expected) && status.code == 422 => {}
            Err(e) => failures.push(format!("{name}: rejected without {expected:?}: {e}")),
        }
    }
    let good = [
        drain("g1", json!({"url": "syslog://logs.example.com:514"})),
        drain(
            "g2",
            json!({"url": "syslog-tls://10.0.0.1:6514", "tls": {"ca": {"name": "ca", "key": "ca.crt"}, "clientCertificate": {"secretName": "client"}}}),
        ),
        drain("g3", json!({"url": "syslog-udp://[fd00::1]:514/"})),
        drain(
            "g4",
            json!({"url": "https://logs.example.com/ingest?x=1", "credentials": {"secretName": "s", "usernameKey": "u", "passwordKey": "p"}, "http": {"gzip": true}}),
        ),
        drain(
            "g5",
            json!({"url": "http://logs:8080", "rateLimit": {"linesPerSecond": 100}, "format": {"appName": "{pod}"}}),
        ),
    ];
    for object in good {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        if let Err(e) = env.apply::<LogDrain>(&env.tenant, object).await {
            failures.push(format!("{name}: rejected, expected acceptance: {e}"));
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} schema expectations failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

#[tokio::test]
async fn bad_bindings_are_rejected_with_a_clear_message() -> Result<()> {
    let env = env_or_skip!("schema-bindings");
    let sel = json!({"matchLabels": {"app": "web"}});
    let bad = [
        (binding("b1", json!({"selector": sel, "drains": []})), "drains"),
        (
            binding("b2", json!({"selector": sel, "drains": ["other-team/logs"]})),
            "a binding can only name LogDrains of its own namespace",
        ),
        (
            binding("b3", json!({"selector": sel, "drains": ["Logs_1"]})),
            "drains are LogDrain names",
        ),
        (
            binding(
                "b4",
                json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}, "drains": ["d"]}),
            ),
            "In and NotIn need at least one value",
        ),
        (
            binding(
                "b5",
                json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}, "drains": ["d"]}),
            ),
            "Exists and DoesNotExist take no values",
        ),
        (
            binding(
                "b6",
                json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Near"}]}, "drains": ["d"]}),
            ),
            "Unsupported value",
        ),
        (
            binding(
                "b7",
                json!({"selector": sel, "drains": ["d"], "streams": ["stdlog"]}),
            ),
            "Unsupported value",
        ),
        (
            binding("b8", json!({"selector": sel, "drains": ["d", "d"]})),
            "duplicate entries",
        ),
        (binding("b9", json!({"drains": ["d"]})), "selector"),
    ];
    let mut failures = Vec::new();
    for (object, expected) in bad {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        match env.apply::<LogBinding>(&env.tenant, object).await {
            Ok(_) => failures.push(format!("{name}: accepted, expected rejection with {expected:?}")),
            Err(kube::Error::Api(status)) if status.message.contains(expected) => {}
            Err(e) => failures.push(format!("{name}: rejected without {expected:?}: {e}")),
        }
    }
    let good = [
        binding("g1", json!({"selector": sel, "drains": ["logs"]})),
        binding(
            "g2",
            json!({"selector": {}, "drains": ["logs", "audit"], "streams": ["stderr"], "containers": ["app"]}),
        ),
        binding(
            "g3",
            json!({"selector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]}, "drains": ["logs"]}),
        ),
    ];
    for object in good {
        let name = object["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        if let Err(e) = env.apply::<LogBinding>(&env.tenant, object).await {
            failures.push(format!("{name}: rejected, expected acceptance: {e}"));
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} schema expectations failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}
