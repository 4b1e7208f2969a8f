//! `prism-bench otlp-sink`: an OTLP/gRPC trace receiver that counts what it
//! gets and keeps nothing, so the cost of exporting traces can be measured
//! against a collector that costs almost nothing itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::args::OtlpSinkArgs;

#[derive(Default)]
struct Sink {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: usize =
            request.into_inner().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.spans.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Serves until Ctrl-C, then prints how many spans it received.
pub async fn serve(args: OtlpSinkArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen).await?;
    let addr: SocketAddr = listener.local_addr()?;
    let mut stdout = tokio::io::stdout();
    stdout.write_all(format!("listening {addr}\n").as_bytes()).await?;
    stdout.flush().await?;
    let sink = Sink::default();
    let spans = sink.spans.clone();
    Server::builder()
        .add_service(TraceServiceServer::new(sink))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    stdout.write_all(format!("spans {}\n", spans.load(Ordering::Relaxed)).as_bytes()).await?;
    stdout.flush().await?;
    Ok(())
}
