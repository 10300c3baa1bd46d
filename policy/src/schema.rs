//! The OpenAPI schema of the values that have their own parsers (patterns, methods,
//! condition keys), for the CRDs: what the API server can check before the control plane
//! reads an object. The control plane still parses every object with the same strict
//! deserializers as files, so the schema is the first gate, never the only one.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::model::{ConditionKey, Method, SpiffeIdName};
use crate::pattern::{HostPattern, PathPattern, Pattern, PrincipalPattern, RequestPrincipal};

/// A string schema with a pattern, a length limit and a description a person reads when
/// it fails. The limits keep the API server's estimated cost of checking them bounded.
fn string(pattern: &str, max_length: u32, description: &str) -> Schema {
    json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": pattern,
        "description": description,
    })
}

macro_rules! string_schema {
    ($t:ty, $name:literal, $pattern:expr, $max_length:expr, $description:literal) => {
        impl JsonSchema for $t {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                string($pattern, $max_length, $description)
            }
        }
    };
}

string_schema!(
    Pattern,
    "Pattern",
    r"^(\*|\*[^*]+|[^*]+\*?)$",
    256,
    "exact, prefix*, *suffix, or * alone"
);
string_schema!(
    PrincipalPattern,
    "PrincipalPattern",
    r"^(\*|\*[^*]+|spiffe://[^*]+\*?)$",
    640,
    "a SPIFFE ID (spiffe://TD/ns/NS/sa/SA), a spiffe:// prefix*, a *suffix, or * alone"
);
string_schema!(
    PathPattern,
    "PathPattern",
    r"^(\*|\*[^*]+|/[^*]*\*?)$",
    1000,
    "a path starting with /, as /exact, /prefix*, *suffix, or * alone; or a template with whole-segment claims, /accounts/{request.auth.claims[sub]}/*"
);
string_schema!(
    HostPattern,
    "HostPattern",
    r"^(\*|\*[^*\s@/%,;]+|[^*\s@/%,;]+\*?)(:[0-9]{1,5})?$",
    256,
    "a host name (exact, prefix*, *suffix, or *), optionally :port"
);
string_schema!(
    RequestPrincipal,
    "RequestPrincipal",
    r"^(\*|\*[^*]+|[^*]+\*|[^*]*/[^*]*)$",
    640,
    "ISSUER/SUBJECT of a verified end user: exact, prefix*, *suffix, or * alone"
);
string_schema!(
    SpiffeIdName,
    "SpiffeIdName",
    r"^spiffe://[^*/]+/[^*]+$",
    640,
    "one exact SPIFFE ID, spiffe://TD/PATH"
);
string_schema!(
    Method,
    "Method",
    r"^[A-Z0-9_-]+$",
    32,
    "an upper-case HTTP method such as GET"
);
string_schema!(
    ConditionKey,
    "ConditionKey",
    r"^(request\.headers\[[!-9;-~]+\]|request\.auth\.claims(\[[!-Z^-z|~]+\])+)$",
    256,
    "request.headers[NAME] or request.auth.claims[NAME] (nested: [NAME][NAME])"
);
