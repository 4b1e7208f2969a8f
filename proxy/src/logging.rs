//! Logs and traces of the proxy (through `prism-telemetry`), and the
//! environment that makes the plugins it starts export to the same place.

use prism_telemetry::{LogFormat as Format, Logs, Sampling, Telemetry, TelemetryError, Traces};

use crate::config::{Config, LogFormat};

fn logs(config: &Config) -> Logs {
    Logs {
        format: match config.log.format {
            LogFormat::Text => Format::Text,
            LogFormat::Json => Format::Json,
        },
        default_filter: config.log.level.clone(),
    }
}

/// The traces of `config`, when it has a `tracing` block.
fn traces(config: &Config) -> Option<Traces> {
    config.tracing.as_ref().map(|t| Traces {
        endpoint: t.otlp_endpoint.clone(),
        sampling: Sampling::Ratio(t.sampling_ratio),
        service_name: t.service_name.clone(),
        resource: t.resource.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        timeout: t.export_timeout,
    })
}

/// Installs the global subscriber: logs on standard error (`PRISM_LOG`, an
/// `EnvFilter` directive, overrides the configured level) and, with
/// `tracing` configured, the OTLP span exporter. Must run inside the tokio
/// runtime when tracing is configured.
pub fn init(config: &Config) -> Result<Telemetry, TelemetryError> {
    prism_telemetry::init(&logs(config), traces(config).as_ref())
}

/// Environment of a plugin the proxy starts: its log format, and, when the
/// proxy exports traces, the standard OpenTelemetry variables that make the
/// plugin export its spans to the same collector.
pub fn plugin_env(config: &Config, plugin: &str) -> Vec<(String, String)> {
    let mut env = vec![(prism_proto::wire::flags::LOG_FORMAT_ENV.to_owned(), config.log.format.as_str().to_owned())];
    if let Some(traces) = traces(config) {
        env.extend(traces.child_env(&format!("{}-plugin-{plugin}", traces.service_name)));
    }
    env
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn plugins_get_the_collector_and_their_own_service_name() {
        let mut config = Config::parse(
            "namespaces_dir: x\nplugins: {m: {command: [x]}}\ntracing: {otlp_endpoint: \"http://127.0.0.1:4317\", resource: {team: \"a,b=c\"}}\n",
        )
        .unwrap();
        let env: std::collections::HashMap<_, _> = plugin_env(&config, "mem").into_iter().collect();
        assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://127.0.0.1:4317");
        assert_eq!(env["OTEL_SERVICE_NAME"], "prism-proxy-plugin-mem");
        assert_eq!(env["OTEL_RESOURCE_ATTRIBUTES"], "team=a%2Cb%3Dc");
        config.tracing = None;
        assert!(!plugin_env(&config, "mem").iter().any(|(k, _)| k.starts_with("OTEL_")));
    }
}
