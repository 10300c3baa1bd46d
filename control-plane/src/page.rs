//! The dashboard's web server (`--dashboard ADDR`): one page, its script and style, and
//! read-only JSON endpoints — `/api/mesh` (the [`crate::dashboard`] view with the CA and
//! policy in force), `/api/denials/TEXT` (the newest kept denials mentioning TEXT) and
//! `/api/who-can-call/SPIFFE_ID` (the policy engine's answer for that workload, each known
//! workload as a caller). GET only; nothing on it changes the
//! mesh. The page builds its DOM with `textContent` only: what it shows (paths of denied
//! requests, identities) is never read as markup. A strict Content-Security-Policy allows
//! nothing but this server's own script and style.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;
use ward_runtime::admin::{Admin, Body, json as json_answer, text};
use ward_runtime::{Drain, Readiness};

use crate::state::State;

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/app.css");

fn asset(content_type: &'static str, body: &'static str) -> Response<Body> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        )
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::REFERRER_POLICY, "no-referrer")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_default()
}

/// `%XX` escapes decoded (a SPIFFE ID in a path segment); `None` if they do not read.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The mesh view with what only the control plane knows: its CA and policy.
fn mesh(state: &State) -> serde_json::Value {
    let mut view = state.dashboard.view(SystemTime::now());
    let trust = state.bundle.borrow().clone();
    let ca = state.ca.load();
    let policy = state.policy.borrow().clone();
    view["control_plane"] = json!({
        "trust_domain": state.settings.trust_domain.to_string(),
        "bundle_version": trust.version,
        "ca_not_after": ward_runtime::time::unix_secs(ca.not_after()),
        "policy_version": policy.version,
        "policies": policy.set.policies().len(),
        "mesh_default": policy.set.mesh_default().name(),
    });
    view
}

/// Who can call the workload `rest` names (a percent-encoded SPIFFE ID).
fn who_can_call(state: &State, rest: &str) -> Response<Body> {
    let Some(id) = percent_decode(rest) else {
        return text(StatusCode::BAD_REQUEST, "not a SPIFFE ID\n");
    };
    let Ok(spiffe_id) = ward_certs::parse_spiffe_id(&id) else {
        return text(StatusCode::BAD_REQUEST, "not a SPIFFE ID\n");
    };
    let Ok(workload) = state.registry.workload(&spiffe_id, &*state.attestor) else {
        return text(StatusCode::NOT_FOUND, "no such workload\n");
    };
    let callers = state.dashboard.identities();
    let callers: Vec<&str> = callers.iter().map(String::as_str).collect();
    let policy = state.policy.borrow().clone();
    let reach = policy
        .set
        .reach(&workload.namespace, &workload.labels, &callers);
    let answer = json!({
        "workload": id,
        "namespace": workload.namespace,
        "labels": workload.labels,
        "policy_version": policy.version,
        "reach": reach,
    });
    json_answer(StatusCode::OK, &answer)
}

/// Serves the dashboard on `listener` until the drain.
pub async fn serve(state: Arc<State>, listener: tokio::net::TcpListener, drain: Drain) {
    let (for_mesh, for_search, for_reach) = (state.clone(), state.clone(), state);
    Admin::new(Readiness::new(), None)
        .route("/", Arc::new(|| asset("text/html; charset=utf-8", PAGE)))
        .route(
            "/app.js",
            Arc::new(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/app.css",
            Arc::new(|| asset("text/css; charset=utf-8", STYLE)),
        )
        .route(
            "/api/mesh",
            Arc::new(move || json_answer(StatusCode::OK, &mesh(&for_mesh))),
        )
        .prefix(
            "/api/denials/",
            Arc::new(move |rest| {
                let answer = match percent_decode(&rest) {
                    Some(text) => json_answer(
                        StatusCode::OK,
                        &for_search.dashboard.denials_matching(&text),
                    ),
                    None => text(StatusCode::BAD_REQUEST, "not percent-encoded text\n"),
                };
                Box::pin(async move { answer })
            }),
        )
        .prefix(
            "/api/who-can-call/",
            Arc::new(move |rest| {
                let answer = who_can_call(&for_reach, &rest);
                Box::pin(async move { answer })
            }),
        )
        .serve(listener, drain)
        .await
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn spiffe_ids_come_percent_encoded() {
        assert_eq!(
            percent_decode("spiffe%3A%2F%2Ft%2Fns%2Fa%2Fsa%2Fb").as_deref(),
            Some("spiffe://t/ns/a/sa/b")
        );
        assert_eq!(percent_decode("a%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }
}
