//! rsyslog (Debian's `rsyslogd`) as a syslog receiver: `imtcp` (plain and GnuTLS) and `imudp`,
//! writing each parsed message as a JSON line through an `option.jsonf` template.

use std::{
    net::{IpAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Result;

use super::{Certs, MAX_MESSAGE_BYTES, Ports, Received};
use crate::support::{Daemon, Missing, program, temp_dir, wait_until};

/// A running rsyslogd receiving on [`Rsyslog::ports`].
#[derive(Debug)]
pub struct Rsyslog {
    daemon: Daemon,
    /// The address it listens on.
    pub address: IpAddr,
    /// Where it listens.
    pub ports: Ports,
    /// The CA that signed its TLS certificate.
    pub certs: Certs,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rsyslog {
    /// Whether rsyslogd (with its GnuTLS driver) is installed.
    pub fn available() -> Result<PathBuf, Missing> {
        program(
            "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so",
            "rsyslog-gnutls",
        )?;
        program("/usr/sbin/rsyslogd", "rsyslog")
    }

    /// Start on 127.0.0.1 on fresh ports in a fresh temp dir and wait until all three listeners
    /// accept.
    pub fn start(bin: &std::path::Path) -> Result<Self> {
        Self::start_on(bin, IpAddr::from([127, 0, 0, 1]))
    }

    /// [`Rsyslog::start`] listening on `address` instead (e.g. a bridge's address, for pods; the
    /// TLS certificate still names 127.0.0.1 only).
    pub fn start_on(bin: &std::path::Path, address: IpAddr) -> Result<Self> {
        let dir = temp_dir("sluice-rsyslog-")?;
        let d = dir.path();
        let certs = Certs::generate(d)?;
        let ports = Ports::free();
        let out = d.join("received.jsonl");
        let conf = config(d, &certs, address, ports, &out);
        let conf_path = d.join("rsyslog.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new(bin);
        cmd.arg("-n")
            .arg("-f")
            .arg(&conf_path)
            .arg("-i")
            .arg(d.join("rsyslogd.pid"));
        let daemon = Daemon::spawn("rsyslogd", cmd, &d.join("rsyslogd.log"))?;
        let receiver = Self {
            daemon,
            address,
            ports,
            certs,
            out,
            _dir: dir,
        };
        receiver.wait_listening()?;
        Ok(receiver)
    }

    fn wait_listening(&self) -> Result<()> {
        wait_until(
            "rsyslogd to listen",
            Duration::from_secs(30),
            || {
                let open = |port| {
                    TcpStream::connect_timeout(&(self.address, port).into(), Duration::from_millis(200))
                        .is_ok()
                };
                (open(self.ports.tcp) && open(self.ports.tls)).then_some(())
            },
            || self.daemon.log_tail(10),
        )
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<Received> {
        Received::parse_file(&self.out)
    }

    /// How many messages it has written so far (counts lines without parsing them, for
    /// benchmarks).
    pub fn received_count(&self) -> u64 {
        std::fs::read(&self.out)
            .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
            .unwrap_or(0)
    }

    /// The receiver's own log (for failure messages).
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail(20)
    }

    /// Stop it (a dropped receiver is stopped too); returns when it has exited.
    pub fn stop(self) {}

    /// SIGSTOP/SIGCONT: a stopped receiver accepts nothing new and reads nothing.
    pub fn pause(&self, paused: bool) {
        self.daemon
            .signal(if paused { libc::SIGSTOP } else { libc::SIGCONT });
    }
}

/// The rsyslog configuration: three inputs into one ruleset writing JSON lines to `out`.
fn config(dir: &Path, certs: &Certs, address: IpAddr, ports: Ports, out: &Path) -> String {
    format!(
        r#"global(workDirectory="{work}" maxMessageSize="{max}"
   defaultNetstreamDriverCAFile="{ca}" defaultNetstreamDriverCertFile="{cert}"
   defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" maxSessions="1000" maxFrameSize="{max}")
module(load="imudp")
template(name="sluice" type="list" option.jsonf="on") {{
  property(outname="app" name="app-name" format="jsonf")
  property(outname="host" name="hostname" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="sluice") {{ action(type="omfile" file="{out}" template="sluice") }}
input(type="imtcp" address="{address}" port="{tcp}" ruleset="sluice")
input(type="imtcp" address="{address}" port="{tls}" ruleset="sluice" streamDriver.name="gtls"
  streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imudp" address="{address}" port="{udp}" ruleset="sluice")
"#,
        work = dir.display(),
        max = MAX_MESSAGE_BYTES,
        ca = certs.ca.display(),
        cert = certs.cert.display(),
        key = certs.key.display(),
        out = out.display(),
        address = address,
        tcp = ports.tcp,
        tls = ports.tls,
        udp = ports.udp,
    )
}
