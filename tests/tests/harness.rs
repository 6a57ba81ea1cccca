//! The harnesses themselves, against the real daemons: each receiver parses what a hand-written
//! RFC5424 message carries over TCP (octet counting), TLS and UDP; the HTTP receiver decodes gzip
//! and plays 503; Docker's own json-file driver records exactly what loggen wrote.

use std::{
    io::Write,
    net::{TcpStream, UdpSocket},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::Result;
use sluice_tests::{
    LineSpec, Stream,
    docker::{Docker, RunSpec},
    http::HttpReceiver,
    multiset::{Multiset, assert_exact},
    support::{bin_dir, need, wait_until},
    syslog::{Ports, Received, Rsyslog, SyslogNg},
};

/// A message with every header field and structured data, plus `n` bytes of body.
fn message(tag: &str, number: usize) -> (String, String) {
    let body = format!("{tag} {}", "x".repeat(number));
    let msg = format!(
        r#"<14>1 2026-11-21T10:00:00.123456Z node-a web-1 app 0123456789abcdef [kubernetes@32473 namespace="shop" pod="web-1" container="app"] {body}"#
    );
    (msg, body)
}

fn octet(msg: &str) -> String {
    format!("{} {msg}", msg.len())
}

/// Sends the messages; returns their bodies and the TLS client, to be killed once they arrived.
fn send_all(ports: Ports, ca_tag: &str) -> Result<(Vec<String>, KillOnDrop)> {
    let mut bodies = Vec::new();
    let mut tcp = TcpStream::connect(("127.0.0.1", ports.tcp))?;
    for (i, n) in [10usize, 3000, 2 * 1024 * 1024].into_iter().enumerate() {
        let (msg, body) = message(&format!("{ca_tag}-tcp-{i}"), n);
        tcp.write_all(octet(&msg).as_bytes())?;
        bodies.push(body);
    }
    drop(tcp);
    let (msg, body) = message(&format!("{ca_tag}-udp"), 100);
    UdpSocket::bind("127.0.0.1:0")?.send_to(msg.as_bytes(), ("127.0.0.1", ports.udp))?;
    bodies.push(body);
    // TLS through the openssl CLI (anonymous client; the receivers do not ask for a certificate).
    let (msg, body) = message(&format!("{ca_tag}-tls"), 500);
    let mut client = Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{}", ports.tls),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    client
        .stdin
        .take()
        .expect("invariant: stdin is piped")
        .write_all(octet(&msg).as_bytes())?;
    bodies.push(body);
    Ok((bodies, KillOnDrop(client)))
}

/// s_client keeps the connection open after its input ends; it is killed when the test is done.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn check(received: &[Received], bodies: &[String]) {
    let got: Multiset = received.iter().map(|r| r.msg.clone()).collect();
    assert_exact("receiver", &bodies.iter().cloned().collect(), &got);
    for r in received {
        assert_eq!(
            (r.app.as_str(), r.host.as_str(), r.procid.as_str()),
            ("web-1", "node-a", "app"),
            "{r:?}"
        );
        assert_eq!(r.msgid, "0123456789abcdef");
        assert_eq!(r.sd["kubernetes@32473"]["namespace"], "shop");
        assert_eq!(r.sd_param("container"), Some("app"));
    }
}

#[test]
fn rsyslog_receives_tcp_tls_udp() -> Result<()> {
    let Some(bin) = need("rsyslog_receives_tcp_tls_udp", Rsyslog::available()) else {
        return Ok(());
    };
    let rsyslog = Rsyslog::start(&bin)?;
    let (bodies, _client) = send_all(rsyslog.ports, "r")?;
    let received = wait_until(
        "rsyslog to write 5 messages",
        Duration::from_secs(30),
        || Some(rsyslog.received()).filter(|r| r.len() >= bodies.len()),
        || {
            format!(
                "{} received; log: {}",
                rsyslog.received().len(),
                rsyslog.log_tail()
            )
        },
    )?;
    check(&received, &bodies);
    Ok(())
}

#[test]
fn syslog_ng_receives_tcp_tls_udp() -> Result<()> {
    let Some(root) = need("syslog_ng_receives_tcp_tls_udp", SyslogNg::available()) else {
        return Ok(());
    };
    let ng = SyslogNg::start(&root)?;
    let (bodies, _client) = send_all(ng.ports, "n")?;
    let received = wait_until(
        "syslog-ng to write 5 messages",
        Duration::from_secs(30),
        || Some(ng.received()).filter(|r| r.len() >= bodies.len()),
        || format!("{} received; log: {}", ng.received().len(), ng.log_tail()),
    )?;
    check(&received, &bodies);
    Ok(())
}

#[test]
fn http_receiver_decodes_gzip_and_fails_on_request() -> Result<()> {
    let http = HttpReceiver::start()?;
    let post = |body: Vec<u8>, gzip: bool| -> Result<u16> {
        let url = http.url();
        let hostport = url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut s = TcpStream::connect(&hostport)?;
        let enc = if gzip { "Content-Encoding: gzip\r\n" } else { "" };
        write!(
            s,
            "POST /ingest HTTP/1.1\r\nHost: x\r\n{enc}Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        s.write_all(&body)?;
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out)?;
        Ok(out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0))
    };
    let lines = "{\"message\":\"a\"}\n{\"message\":\"b\"}\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(lines.as_bytes())?;
    assert_eq!(post(lines.as_bytes().to_vec(), false)?, 200);
    assert_eq!(post(gz.finish()?, true)?, 200);
    http.set_failing(true);
    assert_eq!(post(lines.as_bytes().to_vec(), false)?, 503);
    http.set_failing(false);
    assert_eq!(http.messages(), ["a", "b", "a", "b"]);
    assert_eq!(http.requests(), (3, 1));
    Ok(())
}

#[test]
fn docker_records_what_loggen_wrote_with_rotation() -> Result<()> {
    let test = "docker_records_what_loggen_wrote_with_rotation";
    let Some(bins) = need(test, bin_dir()) else {
        return Ok(());
    };
    let Some(docker) = need(test, Docker::start_if_available()) else {
        return Ok(());
    };
    let docker = docker?;
    docker.build_loggen_image(&bins)?;
    let mut spec = LineSpec::new("h", 100, 200);
    spec.stderr_every = 4;
    let args = "--tag h --count 300 --rate 0 --size 100..200 --stderr-every 4";
    let id = docker.run(&RunSpec {
        name: "harness-1".into(),
        args: args.split(' ').map(String::from).collect(),
        max_size: Some("1m".into()),
        max_file: Some(2),
        ..RunSpec::default()
    })?;
    assert_eq!(docker.wait(&id)?, 0);
    let text = std::fs::read_to_string(docker.log_path(&id))?;
    let mut got = Multiset::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let log = v["log"].as_str().unwrap_or_default().trim_end_matches('\n');
        got.add(format!("{} {log}", v["stream"].as_str().unwrap_or_default()));
    }
    let want: Multiset = (0..300)
        .map(|s| format!("{} {}", spec.stream(s).as_str(), spec.line(s)))
        .collect();
    assert_exact("docker json-file", &want, &got);
    assert_eq!(spec.stream(3), Stream::Stderr);
    Ok(())
}
