//! Validation: the invariants of the module documentation of [`super`], checked on a whole node
//! config ([`NodeConfig::validate`], which [`NodeConfig::from_yaml`] runs) or on one drain
//! ([`DrainConfig::validate`]).

use std::collections::BTreeSet;

use super::{
    CURRENT_VERSION, ConfigError, DrainConfig, DrainKind, DrainPlan, Limits, NodeConfig, RuntimeId, Stream,
    plan::{self, Files},
};

impl DrainConfig {
    /// Check this drain on its own: its settings, and everything a collector checks when it builds
    /// the drain, except the files it names (see [`DrainConfig::plan`]). The error names the field
    /// relative to the drain (`url`, `syslog.appName`); [`NodeConfig::validate`] reports the same
    /// as `drains[i].…`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.checked(Files::Unread)
            .map(drop)
            .map_err(|(field, message)| ConfigError::invalid(field, message))
    }

    /// Check this drain as [`DrainConfig::validate`] does, read the files its TLS settings name,
    /// and return what a collector builds the drain from. A `tls.caBundle` must have been put
    /// into `tls.caPem` first ([`NodeConfig::from_yaml`] does).
    pub fn plan(&self) -> Result<DrainPlan, ConfigError> {
        self.checked(Files::Read)
            .map_err(|(field, message)| ConfigError::invalid(field, message))
    }

    fn checked(&self, files: Files) -> Result<DrainPlan, plan::Failure> {
        validate_drain(self).map_err(|(field, message)| (field.unwrap_or_default().to_owned(), message))?;
        match self.kind() {
            Ok(kind) => plan::plan(self, kind, files),
            Err(e) => Err(("url".to_owned(), e.to_string())),
        }
    }
}

impl NodeConfig {
    /// Check the invariants listed in the module documentation.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.version != CURRENT_VERSION {
            return Err(ConfigError::invalid(
                "version",
                format!(
                    "version {} is not supported (this collector reads version {CURRENT_VERSION})",
                    self.version
                ),
            ));
        }
        if !(1024..=Limits::MAX_LINE_BYTES_CAP).contains(&self.limits.max_line_bytes) {
            return Err(ConfigError::invalid(
                "limits.maxLineBytes",
                format!(
                    "must be between 1024 and {} (16 MiB): the collector holds a line this long in memory per drain and stream",
                    Limits::MAX_LINE_BYTES_CAP
                ),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, drain) in self.drains.iter().enumerate() {
            drain.checked(Files::Unread).map_err(|(field, message)| {
                let field = if field.is_empty() {
                    format!("drains[{i}]")
                } else {
                    format!("drains[{i}].{field}")
                };
                ConfigError::invalid(field, message)
            })?;
            if !names.insert(drain.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("drains[{i}].name"),
                    format!("duplicate drain name {:?}", drain.name),
                ));
            }
        }
        self.validate_ca_bundles()?;
        let check_refs = |field: String, drains: &[String], streams: &[Stream]| -> Result<(), ConfigError> {
            if drains.is_empty() {
                return Err(ConfigError::invalid(format!("{field}.drains"), "names no drain"));
            }
            if streams.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{field}.streams"),
                    "names no stream",
                ));
            }
            match drains.iter().find(|d| !names.contains(d.as_str())) {
                Some(unknown) => Err(ConfigError::invalid(
                    format!("{field}.drains"),
                    format!("unknown drain {unknown:?}"),
                )),
                None => Ok(()),
            }
        };
        for (i, c) in self.containers.iter().enumerate() {
            let runtime = c
                .runtime_id()
                .map_err(|e| ConfigError::invalid(format!("containers[{i}].id"), e.to_string()))?;
            if let RuntimeId::Cri(_) = runtime {
                c.check_path_names().map_err(|e| {
                    ConfigError::invalid(format!("containers[{i}].{}", e.field), e.to_string())
                })?;
            }
            check_refs(format!("containers[{i}]"), &c.drains, &c.streams)?;
        }
        for (i, s) in self.selectors.iter().enumerate() {
            if s.name.is_none() && s.labels.is_empty() {
                return Err(ConfigError::invalid(
                    format!("selectors[{i}]"),
                    "selects every container; give a name glob (\"*\" if you mean it) or labels",
                ));
            }
            check_refs(format!("selectors[{i}]"), &s.drains, &s.streams)?;
        }
        Ok(())
    }
}

impl NodeConfig {
    /// Every `caBundles` entry is a usable CA bundle, and every `tls.caBundle` names one.
    fn validate_ca_bundles(&self) -> Result<(), ConfigError> {
        for (name, pem) in &self.ca_bundles {
            plan::ca_bundle(pem.as_bytes())
                .map_err(|m| ConfigError::invalid(format!("caBundles.{name}"), m))?;
        }
        for (i, drain) in self.drains.iter().enumerate() {
            let bundle = drain.tls.as_ref().and_then(|t| t.ca_bundle.as_ref());
            if let Some(name) = bundle.filter(|n| !self.ca_bundles.contains_key(*n)) {
                return Err(ConfigError::invalid(
                    format!("drains[{i}].tls.caBundle"),
                    format!("names {name:?}, which caBundles does not hold"),
                ));
            }
        }
        Ok(())
    }
}

fn validate_drain(drain: &DrainConfig) -> Result<(), (Option<&'static str>, String)> {
    let name_ok = !drain.name.is_empty()
        && drain.name.len() <= 63
        && drain
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !drain.name.starts_with('-')
        && !drain.name.ends_with('-');
    if !name_ok {
        return Err((
            Some("name"),
            format!("{:?} is not a DNS label (a-z, 0-9, '-', at most 63)", drain.name),
        ));
    }
    let kind = drain.kind().map_err(|e| (Some("url"), e.to_string()))?;
    if let Some(tls) = &drain.tls {
        if !kind.uses_tls() {
            return Err((
                Some("tls"),
                "TLS options need a syslog-tls:// or https:// URL".into(),
            ));
        }
        if tls.cert_pem.is_some() != tls.key_pem.is_some() {
            return Err((Some("tls"), "certPem and keyPem go together".into()));
        }
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err((Some("tls"), "certFile and keyFile go together".into()));
        }
        let cas = [
            tls.ca_pem.is_some(),
            tls.ca_file.is_some(),
            tls.ca_bundle.is_some(),
        ];
        if cas.iter().filter(|c| **c).count() > 1 {
            return Err((Some("tls"), "give one of caPem, caFile and caBundle".into()));
        }
        if tls.insecure_skip_verify && cas.contains(&true) {
            return Err((
                Some("tls.insecureSkipVerify"),
                "a CA is pointless when verification is off".into(),
            ));
        }
    }
    if drain.http.is_some() && !matches!(kind, DrainKind::Http { .. }) {
        return Err((
            Some("http"),
            "HTTP options need an http:// or https:// URL".into(),
        ));
    }
    if let (DrainKind::Http { tls: false, .. }, Some(http)) = (&kind, &drain.http)
        && http.has_credentials()
        && !http.allow_credentials_over_http
    {
        return Err((
            Some("http"),
            "credentials over plain http:// can be read by anyone on the path: use https://, or set http.allowCredentialsOverHttp".into(),
        ));
    }
    let d = &drain.delivery;
    if d.batch_max_lines == 0 || d.batch_max_bytes < 1024 {
        return Err((
            Some("delivery"),
            "batchMaxLines must be ≥ 1 and batchMaxBytes ≥ 1024".into(),
        ));
    }
    if d.timeout_ms == 0 || d.retry_initial_ms == 0 || d.retry_max_ms < d.retry_initial_ms {
        return Err((
            Some("delivery"),
            "timeoutMs and retryInitialMs must be > 0, retryMaxMs ≥ retryInitialMs".into(),
        ));
    }
    if let Some(code) = d.drop_on_status.iter().find(|c| !(400..=599).contains(*c)) {
        return Err((
            Some("delivery.dropOnStatus"),
            format!("{code} is not an HTTP error status (400-599)"),
        ));
    }
    if d.max_lines_per_second == Some(0) {
        return Err((
            Some("delivery.maxLinesPerSecond"),
            "must be > 0 (omit it for no limit)".into(),
        ));
    }
    if matches!(kind, DrainKind::SyslogUdp { .. }) && drain.syslog.max_datagram_bytes < 480 {
        return Err((
            Some("syslog.maxDatagramBytes"),
            "must be at least 480 (RFC5426)".into(),
        ));
    }
    Ok(())
}
