//! prismctl's own config file: defaults for the flags, so a user does not
//! repeat the endpoint on every command.
//!
//! Looked up at `--config`, else `$PRISMCTL_CONFIG`, else
//! `<config dir>/prism/prismctl.yaml` (`~/.config/prism/prismctl.yaml` on
//! Linux); a missing default file is fine. Flags and environment variables
//! win over the file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::output::DocumentError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Proxy endpoint, e.g. `http://127.0.0.1:8980`.
    pub endpoint: Option<String>,
    /// Deadline of each call, e.g. `10s`.
    pub timeout: Option<String>,
    /// PEM file of the CA that signs the proxy's certificate.
    pub ca: Option<PathBuf>,
    /// PEM client certificate and key, for proxies that require mTLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

pub fn default_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("prism").join("prismctl.yaml"))
}

/// Reads the settings at `explicit` (which must exist) or at the default
/// path (which may not).
pub fn load(explicit: Option<&Path>) -> anyhow::Result<Settings> {
    let (path, required) = match explicit {
        Some(p) => (p.to_owned(), true),
        None => match default_path() {
            Some(p) => (p, false),
            None => return Ok(Settings::default()),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(Settings::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if text.trim().is_empty() {
        return Ok(Settings::default());
    }
    serde_saphyr::from_str(&text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        // serde-saphyr's first line is the summary; the rest repeats the
        // place, which DocumentError carries as fields.
        let message = e.to_string().lines().next().unwrap_or_default().to_owned();
        anyhow::Error::new(DocumentError { file: path.display().to_string(), line, column, message })
    })
}
