//! syslog-ng as a syslog receiver, run from the copy `scripts/setup.sh` unpacks (it conflicts with
//! rsyslog in apt): `syslog()` sources (RFC5424 with RFC6587 octet counting) on TCP, TLS and UDP,
//! written as JSON lines with `format-json`.

use std::{
    net::TcpStream,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Result;

use super::{Certs, MAX_MESSAGE_BYTES, Ports, Received};
use crate::support::{Daemon, Missing, temp_dir, wait_until};

/// A running syslog-ng receiving on [`SyslogNg::ports`].
#[derive(Debug)]
pub struct SyslogNg {
    daemon: Daemon,
    /// Where it listens.
    pub ports: Ports,
    /// The CA that signed its TLS certificate.
    pub certs: Certs,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn tcp_open(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

impl SyslogNg {
    /// The unpacked syslog-ng root (`SLUICE_SYSLOG_NG_ROOT`, default `/var/cache/sluice/syslog-ng/root`).
    pub fn available() -> Result<PathBuf, Missing> {
        let root = std::env::var_os("SLUICE_SYSLOG_NG_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let cache = std::env::var_os("SLUICE_CACHE")
                    .map(PathBuf::from)
                    .unwrap_or("/var/cache/sluice".into());
                cache.join("syslog-ng/root")
            });
        if root.join("usr/sbin/syslog-ng").is_file() {
            Ok(root)
        } else {
            Err(Missing::new(
                "syslog-ng",
                format!("not unpacked in {}; run scripts/setup.sh", root.display()),
            ))
        }
    }

    /// Start on fresh ports in a fresh temp dir and wait until the TCP and TLS listeners accept.
    pub fn start(root: &Path) -> Result<Self> {
        let dir = temp_dir("sluice-syslog-ng-")?;
        let d = dir.path();
        let certs = Certs::generate(d)?;
        let ports = Ports::free();
        let out = d.join("received.jsonl");
        let conf = config(&certs, ports, &out);
        let conf_path = d.join("syslog-ng.conf");
        std::fs::write(&conf_path, conf)?;
        let mut cmd = Command::new(root.join("usr/sbin/syslog-ng"));
        cmd.env("LD_LIBRARY_PATH", root.join("usr/lib/syslog-ng"))
            .arg("-F")
            .arg(format!(
                "--module-path={}",
                root.join("usr/lib/syslog-ng/3.38").display()
            ))
            .arg(format!("--cfgfile={}", conf_path.display()))
            .arg(format!(
                "--persist-file={}",
                d.join("syslog-ng.persist").display()
            ))
            .arg(format!("--pidfile={}", d.join("syslog-ng.pid").display()))
            .arg(format!("--control={}", d.join("syslog-ng.ctl").display()));
        let daemon = Daemon::spawn("syslog-ng", cmd, &d.join("syslog-ng.log"))?;
        let receiver = Self {
            daemon,
            ports,
            certs,
            out,
            _dir: dir,
        };
        wait_until(
            "syslog-ng to listen",
            Duration::from_secs(30),
            || (tcp_open(receiver.ports.tcp) && tcp_open(receiver.ports.tls)).then_some(()),
            || receiver.daemon.log_tail(10),
        )?;
        Ok(receiver)
    }

    /// Every message received so far.
    pub fn received(&self) -> Vec<Received> {
        Received::parse_file(&self.out)
    }

    /// The receiver's own log (for failure messages).
    pub fn log_tail(&self) -> String {
        self.daemon.log_tail(20)
    }
}

/// The syslog-ng configuration: `syslog()` sources on TCP, TLS and UDP into one JSON-lines file.
fn config(certs: &Certs, ports: Ports, out: &Path) -> String {
    format!(
        r#"@version: 3.38
options {{ log-msg-size({max}); keep-hostname(yes); chain-hostnames(no); }};
source s_net {{
  syslog(ip("127.0.0.1") port({tcp}) transport("tcp") max-connections(1000) log-msg-size({max}));
  syslog(ip("127.0.0.1") port({tls}) transport("tls") max-connections(1000) log-msg-size({max})
     tls(key-file("{key}") cert-file("{cert}") peer-verify(optional-untrusted)));
  syslog(ip("127.0.0.1") port({udp}) transport("udp"));
}};
destination d_file {{
  file("{out}" template("$(format-json --scope none app=${{PROGRAM}} host=${{HOST}} procid=${{PID}} msgid=${{MSGID}} sd=${{SDATA}} msg=${{MSG}})\n"));
}};
log {{ source(s_net); destination(d_file); }};
"#,
        max = MAX_MESSAGE_BYTES,
        tcp = ports.tcp,
        tls = ports.tls,
        udp = ports.udp,
        key = certs.key.display(),
        cert = certs.cert.display(),
        out = out.display(),
    )
}
