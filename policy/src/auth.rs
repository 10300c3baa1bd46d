//! The end user behind a request, as policy reads it: a verified request principal
//! (`ISSUER/SUBJECT`) and the token's claims. The gateway verifies the token; a sidecar
//! reads the same facts from the gateway's header, and only from callers that mesh policy
//! names as gateways. The engine never sees a token, only what was verified of it.
//!
//! Claims are reached by a [`ClaimPath`] (`request.auth.claims[groups]`,
//! `request.auth.claims[realm][roles]`) and compared as text: a string claim is its value,
//! a number its JSON text, a list claim each of its elements. A claim-bound path template
//! (`/accounts/{request.auth.claims[sub]}/*`) matches only where the template segment is,
//! after normalization, exactly one of the claim's values.

use std::fmt;

/// A verified end user's claims, however the caller holds them.
pub trait Claims {
    /// Calls `f` on each scalar value at `path` (a string, a number as JSON text, each such
    /// element of a list) until it returns `true`; whether it did. An absent claim, an
    /// object or a boolean gives no value.
    fn any_value(&self, path: &[String], f: &mut dyn FnMut(&str) -> bool) -> bool;
}

/// The end user of a request, verified.
#[derive(Clone, Copy)]
pub struct RequestAuth<'a> {
    /// `ISSUER/SUBJECT` (`ISSUER/` for a token without `sub`).
    pub principal: &'a str,
    pub claims: &'a dyn Claims,
}

impl fmt::Debug for RequestAuth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestAuth")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// Where a claim is: `request.auth.claims[a]` is `["a"]`, `[a][b]` is `["a", "b"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath(pub Vec<String>);

const CLAIMS_PREFIX: &str = "request.auth.claims";
/// Nesting deeper than this is refused (no IdP nests claims that deep).
const MAX_CLAIM_DEPTH: usize = 8;

impl ClaimPath {
    /// Parses `request.auth.claims[NAME]([NAME]...)`; `None` if `s` is not of that shape.
    pub fn parse(s: &str) -> Option<Self> {
        let mut rest = s.strip_prefix(CLAIMS_PREFIX)?;
        let mut names = Vec::new();
        while !rest.is_empty() {
            let inner = rest.strip_prefix('[')?;
            let end = inner.find(']')?;
            let name = &inner[..end];
            let fine = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'[' | b']' | b'{' | b'}'));
            if !fine {
                return None;
            }
            names.push(name.to_owned());
            rest = &inner[end + 1..];
        }
        (!names.is_empty() && names.len() <= MAX_CLAIM_DEPTH).then_some(Self(names))
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(CLAIMS_PREFIX)?;
        for name in &self.0 {
            write!(f, "[{name}]")?;
        }
        Ok(())
    }
}

/// A path with claim placeholders: `/accounts/{request.auth.claims[sub]}/*`. Each
/// placeholder is a whole segment; a `*` may only be the whole last segment (any rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
    /// Ends with `/*`: the segments, then anything.
    rest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Claim(ClaimPath),
}

impl PathTemplate {
    /// `None` if `s` has no placeholder (a plain pattern); an error if it has one and is
    /// malformed.
    pub fn parse(s: &str) -> Result<Option<Self>, String> {
        if !s.contains('{') && !s.contains('}') {
            return Ok(None);
        }
        let body = s
            .strip_prefix('/')
            .ok_or_else(|| format!("path template {s:?} must start with '/'"))?;
        let (body, rest) = match body.strip_suffix("/*") {
            Some(b) => (b, true),
            None => (body, false),
        };
        let mut segments = Vec::new();
        for seg in body.split('/') {
            if let Some(inner) = seg.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                let claim = ClaimPath::parse(inner).ok_or_else(|| {
                    format!("path template {s:?}: {{{inner}}} is not {{request.auth.claims[NAME]}}")
                })?;
                segments.push(Segment::Claim(claim));
            } else if seg.contains(['{', '}', '*']) {
                return Err(format!(
                    "path template {s:?}: a placeholder must be a whole segment, and '*' only the \
                     whole last one"
                ));
            } else if seg.is_empty() || seg == "." || seg == ".." {
                return Err(format!(
                    "path template {s:?}: empty, '.' and '..' segments never match a normalized path"
                ));
            } else {
                let normal = crate::path::normalize_path(&format!("/{seg}"))
                    .map_err(|e| format!("path template {s:?}: {e}"))?;
                segments.push(Segment::Literal(normal[1..].to_owned()));
            }
        }
        Ok(Some(Self { segments, rest }))
    }

    /// Whether a normalized `path` matches; `None` when the template needs an end user and
    /// the request has none (or lacks the claim): the caller decides which way that fails.
    pub fn matches(&self, path: &str, auth: Option<&RequestAuth<'_>>) -> Option<bool> {
        let auth = auth?;
        let mut parts = path.strip_prefix('/')?.split('/');
        for seg in &self.segments {
            let Some(part) = parts.next() else {
                return Some(false);
            };
            match seg {
                Segment::Literal(l) => {
                    if part != l {
                        return Some(false);
                    }
                }
                Segment::Claim(claim) => {
                    let mut seen = false;
                    let hit = auth.claims.any_value(&claim.0, &mut |v| {
                        seen = true;
                        segment_is(part, v)
                    });
                    if !seen {
                        return None;
                    }
                    if !hit {
                        return Some(false);
                    }
                }
            }
        }
        Some(match parts.next() {
            // `/*` wants a next segment, possibly empty (`/accounts/alice/`).
            Some(_) => self.rest,
            None => !self.rest,
        })
    }
}

/// Whether a segment of a normalized path is exactly `value`: the segment with its
/// remaining percent-escapes decoded equals the value byte for byte. A value that is
/// empty or holds a `/` never matches (no single segment is it).
fn segment_is(segment: &str, value: &str) -> bool {
    if value.is_empty() || value.contains('/') {
        return false;
    }
    let mut decoded = Vec::with_capacity(segment.len());
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(Ok(b)) = segment.get(i + 1..i + 3).map(|h| u8::from_str_radix(h, 16))
        {
            decoded.push(b);
            i += 3;
            continue;
        }
        decoded.push(bytes[i]);
        i += 1;
    }
    decoded == value.as_bytes()
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => write!(f, "/{l}")?,
                Segment::Claim(c) => write!(f, "/{{{c}}}")?,
            }
        }
        if self.rest {
            f.write_str("/*")?;
        }
        Ok(())
    }
}

/// Claims as a list of `(path, value)` pairs: for tests and `ward policy check`.
impl Claims for Vec<(Vec<String>, String)> {
    fn any_value(&self, path: &[String], f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.iter().filter(|(p, _)| p == path).any(|(_, v)| f(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(pairs: &[(&str, &str)]) -> Vec<(Vec<String>, String)> {
        pairs
            .iter()
            .map(|(k, v)| {
                let path = k.split('.').map(str::to_owned).collect();
                (path, (*v).to_owned())
            })
            .collect()
    }

    #[test]
    fn claim_paths_parse_nested_names_and_refuse_the_rest() {
        let p = ClaimPath::parse("request.auth.claims[realm_access][roles]").unwrap();
        assert_eq!(p.0, ["realm_access", "roles"]);
        assert_eq!(p.to_string(), "request.auth.claims[realm_access][roles]");
        for bad in [
            "request.auth.claims",
            "request.auth.claims[]",
            "request.auth.claims[a",
            "request.auth.claims[a]x",
            "request.auth.claims[a b]",
            "request.headers[a]",
            "request.auth.claims[a][b][c][d][e][f][g][h][i]",
        ] {
            assert!(ClaimPath::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn templates_match_only_the_users_own_segment() {
        let t = PathTemplate::parse("/accounts/{request.auth.claims[sub]}/*")
            .unwrap()
            .unwrap();
        let alice = claims(&[("sub", "alice")]);
        let auth = RequestAuth {
            principal: "https://idp/alice",
            claims: &alice,
        };
        let m = |path: &str| t.matches(path, Some(&auth));
        assert_eq!(m("/accounts/alice/balance"), Some(true));
        assert_eq!(m("/accounts/alice/"), Some(true));
        assert_eq!(m("/accounts/alice"), Some(false), "/* wants a rest");
        assert_eq!(m("/accounts/bob/balance"), Some(false));
        assert_eq!(m("/accounts/alicex/balance"), Some(false));
        assert_eq!(m("/accounts/alic/balance"), Some(false));
        assert_eq!(m("/other/alice/balance"), Some(false));
        assert_eq!(t.matches("/accounts/alice/x", None), None, "no end user");
        let nosub = claims(&[("email", "alice")]);
        let auth = RequestAuth {
            principal: "https://idp/",
            claims: &nosub,
        };
        assert_eq!(t.matches("/accounts/alice/x", Some(&auth)), None);
        assert_eq!(t.to_string(), "/accounts/{request.auth.claims[sub]}/*");
    }

    #[test]
    fn template_values_compare_after_normalization_and_lists_match_any_element() {
        let t = PathTemplate::parse("/u/{request.auth.claims[accounts]}")
            .unwrap()
            .unwrap();
        let c = claims(&[
            ("accounts", "a 1"),
            ("accounts", "café"),
            ("accounts", "x/y"),
        ]);
        let auth = RequestAuth {
            principal: "i/s",
            claims: &c,
        };
        assert_eq!(t.matches("/u/a%201", Some(&auth)), Some(true));
        assert_eq!(t.matches("/u/caf%C3%A9", Some(&auth)), Some(true));
        assert_eq!(t.matches("/u/café", Some(&auth)), Some(true));
        assert_eq!(t.matches("/u/x", Some(&auth)), Some(false), "a '/' value");
        assert_eq!(t.matches("/u/a%201/more", Some(&auth)), Some(false));
        let empty = claims(&[("accounts", "")]);
        let auth = RequestAuth {
            principal: "i/s",
            claims: &empty,
        };
        assert_eq!(t.matches("/u/", Some(&auth)), Some(false));
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in [
            "/a/{request.auth.claims[sub]}x",
            "/a/{sub}",
            "/a/{request.headers[x]}",
            "/a/*/{request.auth.claims[sub]}",
            "a/{request.auth.claims[sub]}",
            "/a//{request.auth.claims[sub]}",
            "/a/../{request.auth.claims[sub]}",
            "/a/{request.auth.claims[sub]}*",
            "/a/%2F/{request.auth.claims[sub]}",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(PathTemplate::parse("/plain/*"), Ok(None));
        let t = PathTemplate::parse("/%61/{request.auth.claims[sub]}")
            .unwrap()
            .unwrap();
        assert_eq!(
            t.to_string(),
            "/a/{request.auth.claims[sub]}",
            "literals normalized"
        );
    }
}
