//! One span per request, when the proxy exports traces (`tracing:` in its configuration;
//! see [`ward_runtime::traces`]): a server span for what a sidecar's inbound listener or the
//! gateway receives, a client span for what a sidecar sends on for its app. Each carries
//! the method and path, the two workload identities, the policy decision, the gateway
//! route, the status and the retries, and its context goes on with the request as W3C
//! `traceparent`/`tracestate`. (Spans name paths; metric labels never do.)
//!
//! When traces are off every method here is a no-op on [`tracing::Span::none`].

use std::sync::LazyLock;

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use ward_runtime::traces::{self, TARGET};

use crate::metrics::Direction;

static PROPAGATOR: LazyLock<TraceContextPropagator> = LazyLock::new(TraceContextPropagator::new);

/// The span of one request through this proxy.
#[derive(Debug)]
pub struct RequestSpan(tracing::Span);

/// Where a request's trace context comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    /// The caller's `traceparent` (a mesh peer, or the app): this span continues its trace.
    Continue,
    /// A caller outside the mesh (the gateway's clients): a new trace is started, so no
    /// client chooses what is sampled; the trace it sent is kept as a link.
    Link,
}

impl RequestSpan {
    /// A request received with `headers` on `direction`, from `source` to `destination`
    /// (SPIFFE IDs; the gateway's source is its client's address).
    pub fn start(
        direction: Direction,
        parent: Parent,
        headers: &HeaderMap,
        method: &http::Method,
        path: &str,
        source: &str,
        destination: &str,
    ) -> Self {
        if !traces::enabled() {
            return Self(tracing::Span::none());
        }
        let kind = match direction {
            Direction::Outbound => "client",
            Direction::Inbound | Direction::Gateway => "server",
        };
        let span = tracing::info_span!(target: TARGET, parent: None, "request",
            otel.name = method.as_str(),
            otel.kind = kind,
            otel.status_code = Empty,
            http.request.method = method.as_str(),
            url.path = path,
            http.response.status_code = Empty,
            "error.type" = Empty,
            ward.direction = direction.label(),
            ward.source = source,
            ward.destination = destination,
            ward.route = Empty,
            ward.authz.decision = Empty,
            ward.authz.policy = Empty,
            ward.retries = Empty,
        );
        let sent = PROPAGATOR.extract(&HeaderExtractor(headers));
        let sent = sent.span().span_context().clone();
        if sent.is_valid() {
            match parent {
                Parent::Continue => {
                    let _ = span
                        .set_parent(opentelemetry::Context::new().with_remote_span_context(sent));
                }
                Parent::Link => span.add_link(sent),
            }
        }
        Self(span)
    }

    /// Writes this span's context into the headers of the request sent on (replacing what
    /// the caller sent), so the next hop's span is its child.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        if self.0.is_disabled() {
            return;
        }
        headers.remove("traceparent");
        headers.remove("tracestate");
        PROPAGATOR.inject_context(&self.0.context(), &mut HeaderInjector(headers));
    }

    /// The policy decision: `allow` or `deny`, and the policy that decided (or the mesh
    /// default).
    pub fn decided(&self, decision: &ward_policy::Decision) {
        if self.0.is_disabled() {
            return;
        }
        let verdict = if decision.allowed { "allow" } else { "deny" };
        self.0.record("ward.authz.decision", verdict);
        self.0.record(
            "ward.authz.policy",
            tracing::field::display(&decision.decider),
        );
    }

    /// A refusal decided before policy (authentication, rate limit) by `rule`.
    pub fn refused(&self, rule: &str) {
        self.0.record("ward.authz.decision", "deny");
        self.0.record("ward.authz.policy", rule);
    }

    /// The gateway route that took the request (`routes[N]`).
    pub fn route(&self, index: usize) {
        self.0.record("ward.route", index);
    }

    /// The status the caller got, and why the proxy answered itself if it did.
    pub fn finish(&self, status: u16, cause: Option<&str>) {
        if self.0.is_disabled() {
            return;
        }
        self.0.record("http.response.status_code", status);
        if let Some(cause) = cause {
            self.0.record("error.type", cause);
        }
        if status >= 500 {
            self.0.record("otel.status_code", "error");
        }
    }

    /// The span to run forwarding in: a retry there is counted on it (see [`retried`]).
    pub fn span(&self) -> &tracing::Span {
        &self.0
    }
}

/// A request about to be sent again, `retries` times so far with this one: recorded on
/// the request's span, which forwarding runs in.
pub fn retried(retries: usize) {
    if traces::enabled() {
        tracing::Span::current().record("ward.retries", retries as u64);
    }
}
