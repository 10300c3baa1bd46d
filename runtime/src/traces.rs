//! Request traces: `tracing` spans of the target [`TARGET`] become OpenTelemetry spans
//! (tracing-opentelemetry), are sampled by the SDK and sent over OTLP (gRPC or HTTP/protobuf)
//! in batches.
//!
//! Between the request path and the exporter sits a bounded queue: a finished span is put on
//! it without waiting, and when it is full the span is dropped and counted
//! (`ward_trace_spans_dropped_total`), so a slow or absent collector never slows a request.
//! One task on the process's runtime takes batches off the queue and exports them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::mpsc;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;

use crate::telemetry::ExtraLayer;

/// The target of the spans that are exported; no other span or event is.
pub const TARGET: &str = "ward::trace";

pub const SPANS_EXPORTED: &str = "ward_trace_spans_exported_total";
pub const SPANS_DROPPED: &str = "ward_trace_spans_dropped_total";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces: when not, request spans are not created at all.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// How the OTLP endpoint is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC (`opentelemetry.proto.collector.trace.v1.TraceService/Export`).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (`POST /v1/traces`).
    Http,
}

/// Where and how spans are exported.
#[derive(Debug, Clone)]
pub struct Exporting {
    /// `http://HOST:PORT` (gRPC) or `http://HOST:PORT[/PATH]` (HTTP; `/v1/traces` when no
    /// path is given).
    pub endpoint: String,
    pub protocol: Protocol,
    /// The share of new traces recorded (0 to 1); a request that arrives with a trace
    /// follows its caller's decision.
    pub sampling: f64,
    /// Finished spans waiting for export; more are dropped and counted.
    pub queue: usize,
    /// Spans per export call.
    pub batch: usize,
    /// The longest a span waits for its batch to fill.
    pub interval: Duration,
    /// The longest one export call may take.
    pub timeout: Duration,
    /// The resource: `service.name` and further attributes of this process.
    pub service: String,
    pub attributes: Vec<(&'static str, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("trace endpoint {0:?}: {1}")]
    Endpoint(String, String),
    #[error("trace exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// What [`pipeline`] built beside its layer: the export task to run on the runtime.
pub struct Pipeline {
    pub export: Export,
    /// Kept for the life of the process: dropping the provider would stop the tracer.
    pub provider: SdkTracerProvider,
}

/// Builds the trace pipeline: the layer to install with the log writer (see
/// [`crate::telemetry::init_logs_with`]) and the rest. Nothing is sent until
/// [`Export::run`] runs.
pub fn pipeline(config: Exporting) -> Result<(ExtraLayer, Pipeline), TraceError> {
    let endpoint = endpoint(&config.endpoint, config.protocol)?;
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    let resource = Resource::builder_empty()
        .with_service_name(config.service.clone())
        .with_attributes(
            config
                .attributes
                .iter()
                .map(|(k, v)| KeyValue::new(*k, v.clone())),
        )
        .build();
    let ratio = config.sampling.clamp(0.0, 1.0);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Queue { tx })
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource.clone())
        .build();
    let tracer = provider.tracer("ward");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_level(false)
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::TRACE))
        .boxed();
    ENABLED.store(true, Ordering::Relaxed);
    let pipeline = Pipeline {
        export: Export {
            rx,
            endpoint,
            protocol: config.protocol,
            batch: config.batch.max(1),
            interval: config.interval,
            timeout: config.timeout,
            resource,
        },
        provider,
    };
    Ok((layer, pipeline))
}

/// The endpoint as the exporter wants it: checked, and for HTTP with the signal's path.
pub fn endpoint(endpoint: &str, protocol: Protocol) -> Result<String, TraceError> {
    let bad = |why: &str| TraceError::Endpoint(endpoint.to_owned(), why.to_owned());
    let uri: http::Uri = endpoint.parse().map_err(|e| bad(&format!("{e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad(
            "must be http://HOST:PORT (send to a collector beside the proxy; TLS to the \
             collector is not supported)",
        ));
    }
    if uri.authority().is_none() {
        return Err(bad("has no HOST:PORT"));
    }
    let path = uri.path();
    Ok(match protocol {
        Protocol::Grpc if path != "/" && !path.is_empty() => {
            return Err(bad("an OTLP/gRPC endpoint has no path"));
        }
        Protocol::Grpc => endpoint.trim_end_matches('/').to_owned(),
        Protocol::Http if path == "/" || path.is_empty() => {
            format!("{}/v1/traces", endpoint.trim_end_matches('/'))
        }
        Protocol::Http => endpoint.to_owned(),
    })
}

/// The span processor: finished, sampled spans onto the bounded queue, never waiting.
#[derive(Debug)]
struct Queue {
    tx: mpsc::Sender<SpanData>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            metrics::counter!(SPANS_DROPPED, "reason" => "queue_full").increment(1);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The export task: batches off the queue, one export at a time.
pub struct Export {
    rx: mpsc::Receiver<SpanData>,
    endpoint: String,
    protocol: Protocol,
    batch: usize,
    interval: Duration,
    timeout: Duration,
    resource: Resource,
}

impl Export {
    /// Runs for the life of the process (until every sender is gone). Call on the runtime:
    /// the exporters' clients need it.
    pub async fn run(self) {
        match self.protocol {
            Protocol::Grpc => {
                let built = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(&self.endpoint)
                    .with_timeout(self.timeout)
                    .build();
                self.run_with(built).await;
            }
            Protocol::Http => {
                let built = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(
                        opentelemetry_http::hyper::HyperClient::with_default_connector(
                            self.timeout,
                            None,
                        ),
                    )
                    .with_endpoint(&self.endpoint)
                    .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                    .with_timeout(self.timeout)
                    .build();
                self.run_with(built).await;
            }
        }
    }

    async fn run_with(
        mut self,
        built: Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError>,
    ) {
        let mut exporter = match built {
            Ok(exporter) => exporter,
            Err(e) => {
                tracing::error!(endpoint = %self.endpoint, error = %e,
                    "cannot start the trace exporter: spans are dropped");
                while self.rx.recv().await.is_some() {
                    metrics::counter!(SPANS_DROPPED, "reason" => "no_exporter").increment(1);
                }
                return;
            }
        };
        exporter.set_resource(&self.resource);
        tracing::info!(endpoint = %self.endpoint, protocol = ?self.protocol, "exporting traces");
        let mut failing = false;
        while let Some(batch) = self.next_batch().await {
            let n = batch.len() as u64;
            let sent = tokio::time::timeout(self.timeout, exporter.export(batch)).await;
            match sent {
                Ok(Ok(())) => {
                    metrics::counter!(SPANS_EXPORTED).increment(n);
                    if std::mem::take(&mut failing) {
                        tracing::info!(endpoint = %self.endpoint, "trace export recovered");
                    }
                }
                Ok(Err(e)) => {
                    metrics::counter!(SPANS_DROPPED, "reason" => "export_failed").increment(n);
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(endpoint = %self.endpoint, error = %e,
                            "trace export failed: spans are dropped until it recovers");
                    }
                }
                Err(_) => {
                    metrics::counter!(SPANS_DROPPED, "reason" => "export_timeout").increment(n);
                    if !std::mem::replace(&mut failing, true) {
                        tracing::warn!(endpoint = %self.endpoint,
                            "trace export timed out: spans are dropped until it recovers");
                    }
                }
            }
        }
    }

    /// The next batch: waits for one span, then takes more until the batch is full or
    /// `interval` has passed. `None` when the queue is closed and empty.
    async fn next_batch(&mut self) -> Option<Vec<SpanData>> {
        let first = self.rx.recv().await?;
        let mut batch = Vec::with_capacity(self.batch);
        batch.push(first);
        let deadline = tokio::time::sleep(self.interval);
        tokio::pin!(deadline);
        while batch.len() < self.batch {
            tokio::select! {
                span = self.rx.recv() => match span {
                    Some(span) => batch.push(span),
                    None => break,
                },
                () = &mut deadline => break,
            }
        }
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::{Protocol, endpoint};

    #[test]
    fn endpoints() {
        let ok = |e: &str, p| endpoint(e, p).expect(e);
        assert_eq!(
            ok("http://127.0.0.1:4317", Protocol::Grpc),
            "http://127.0.0.1:4317"
        );
        assert_eq!(ok("http://c:4317/", Protocol::Grpc), "http://c:4317");
        assert_eq!(
            ok("http://c:4318", Protocol::Http),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            ok("http://c:4318/", Protocol::Http),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            ok("http://c:4318/otlp/v1/traces", Protocol::Http),
            "http://c:4318/otlp/v1/traces"
        );
        for bad in [
            "https://c:4317",
            "c:4317",
            "http://",
            "http://c:4317/x",
            "not a uri",
        ] {
            assert!(endpoint(bad, Protocol::Grpc).is_err(), "{bad}");
        }
        assert!(endpoint("ftp://c:1", Protocol::Http).is_err());
    }
}
