//! Probes of the proxy's control plane, timed from the client's side:
//! `apply-latency` (how long the Admin API takes to apply one more
//! namespace, and from sending the apply until the new namespace serves a
//! call) and `first-call` (when a starting proxy first serves a call).

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use prism_proto::admin::v1::ApplyNamespaceRequest;
use prism_proto::admin::v1::admin_service_client::AdminServiceClient;
use prism_proto::keyvalue::v1::GetRequest;
use prism_proto::keyvalue::v1::key_value_service_client::KeyValueServiceClient;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Endpoint;

use crate::args::{ApplyLatencyArgs, FirstCallArgs};

/// One applied namespace.
#[derive(Debug, serde::Serialize)]
pub struct Sample {
    pub namespace: String,
    /// The same document applied with `dry_run` first: validation and the
    /// plan, without the registry write, the plugin's preparation and the
    /// route-table swap.
    pub dry_run_us: u64,
    /// From sending ApplyNamespace to its answer.
    pub apply_us: u64,
    /// From sending ApplyNamespace to the first Get on the namespace that
    /// was answered.
    pub servable_us: u64,
    /// Gets sent until one was answered.
    pub gets: u32,
}

#[derive(Debug, serde::Serialize)]
pub struct Samples {
    pub prism: String,
    pub backend: String,
    pub samples: Vec<Sample>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub async fn apply_latency(args: ApplyLatencyArgs) -> anyhow::Result<()> {
    let channel = Endpoint::from_shared(format!("http://{}", args.prism))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.prism))?;
    let mut admin = AdminServiceClient::new(channel.clone());
    let mut kv = KeyValueServiceClient::new(channel);
    let mut samples = Vec::with_capacity(args.count);
    for i in 0..args.count {
        if i > 0 {
            tokio::time::sleep(args.pause).await;
        }
        let name = format!("{}-{i}", args.prefix);
        let spec_yaml = format!(
            "apiVersion: prism/v1\nkind: Namespace\nmetadata:\n  name: {name}\n  team: bench\n\
             spec:\n  pattern: keyvalue\n  backend: {}\n",
            args.backend
        );
        let start = Instant::now();
        admin
            .apply_namespace(ApplyNamespaceRequest { spec_yaml: spec_yaml.clone(), dry_run: true, force: false })
            .await
            .with_context(|| format!("planning namespace {name}"))?;
        let dry_run = start.elapsed();
        let start = Instant::now();
        let answer = admin
            .apply_namespace(ApplyNamespaceRequest { spec_yaml, dry_run: false, force: false })
            .await
            .with_context(|| format!("applying namespace {name}"))?;
        let applied = start.elapsed();
        ensure!(answer.get_ref().applied, "namespace {name} was not applied (did it exist already?)");
        let mut gets = 0;
        loop {
            gets += 1;
            let probe = GetRequest { namespace: name.clone(), key: "probe".to_owned() };
            match kv.get(probe).await {
                // A key never written answers found = false: served.
                Ok(_) => break,
                // The proxy answers NOT_FOUND for a namespace it does not
                // route (yet), so that is a retry, not an answer.
                Err(status) if matches!(status.code(), Code::NotFound | Code::Unavailable) => {
                    if start.elapsed() > args.timeout {
                        bail!("namespace {name} not served {:?} after its apply: {status}", args.timeout);
                    }
                    // Short enough not to hide a fast reload, long enough not
                    // to load the proxy being measured.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(status) => bail!("Get on the new namespace {name} failed: {status}"),
            }
        }
        let sample = Sample {
            namespace: name,
            dry_run_us: micros(dry_run),
            apply_us: micros(applied),
            servable_us: micros(start.elapsed()),
            gets,
        };
        eprintln!(
            "{}: dry run {} us, apply {} us, servable {} us ({} gets)",
            sample.namespace, sample.dry_run_us, sample.apply_us, sample.servable_us, sample.gets
        );
        samples.push(sample);
    }
    let out = Samples { prism: args.prism.clone(), backend: args.backend.clone(), samples };
    let text = serde_json::to_string_pretty(&out)?;
    match &args.json {
        Some(path) => std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display())),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

/// Sends a Get to `namespace` until one is answered, connecting again
/// while the proxy does not accept connections yet, and prints when
/// (`served <unix µs> <attempts>`): the caller compares it with when it
/// started the proxy.
pub async fn first_call(args: FirstCallArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let endpoint = Endpoint::from_shared(format!("http://{}", args.prism))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(1));
    let mut attempts = 0u32;
    let mut client: Option<KeyValueServiceClient<tonic::transport::Channel>> = None;
    loop {
        attempts += 1;
        let last = match client.as_mut() {
            None => match endpoint.connect().await {
                Ok(channel) => {
                    client = Some(KeyValueServiceClient::new(channel));
                    continue;
                }
                Err(e) => format!("cannot connect: {e}"),
            },
            Some(kv) => {
                let probe = GetRequest { namespace: args.namespace.clone(), key: "probe".to_owned() };
                match kv.get(probe).await {
                    Ok(_) => break,
                    // NOT_FOUND until the namespace is loaded.
                    Err(status) if matches!(status.code(), Code::NotFound | Code::Unavailable) => status.to_string(),
                    Err(status) => bail!("Get on {} failed: {status}", args.namespace),
                }
            }
        };
        if start.elapsed() > args.timeout {
            bail!("{} not served within {:?}: {last}", args.namespace, args.timeout);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    println!("served {} {attempts}", micros(now));
    Ok(())
}
