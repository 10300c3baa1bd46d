//! Where an end-user token is taken from: `Authorization: Bearer` (or `DPoP`, RFC 9449),
//! or a configured header or cookie. Ambiguity is refused, never resolved by picking one:
//! two `Authorization` headers, two cookies of the name, or a token in two places could be
//! read differently by the next hop.

use http::HeaderMap;
use http::header::{AUTHORIZATION, COOKIE};

/// Where the gateway looks for the token: written `authorization`, `{ header: NAME }` or
/// `{ cookie: NAME }`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case", try_from = "SourceFields")]
pub enum TokenSource {
    /// `Authorization: Bearer TOKEN` (and `DPoP TOKEN`).
    Authorization,
    /// A header holding the bare token.
    Header(String),
    /// A cookie holding the bare token.
    Cookie(String),
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum SourceFields {
    Name(String),
    Fields {
        header: Option<String>,
        cookie: Option<String>,
    },
}

impl TryFrom<SourceFields> for TokenSource {
    type Error = String;

    fn try_from(f: SourceFields) -> Result<Self, String> {
        let name_ok = |n: &str| http::HeaderName::from_bytes(n.as_bytes()).is_ok();
        match f {
            SourceFields::Name(n) if n == "authorization" => Ok(TokenSource::Authorization),
            SourceFields::Fields {
                header: Some(h),
                cookie: None,
            } if name_ok(&h) => Ok(TokenSource::Header(h.to_ascii_lowercase())),
            SourceFields::Fields {
                header: None,
                cookie: Some(c),
            } if !c.is_empty() && !c.contains([';', '=', ' ']) => Ok(TokenSource::Cookie(c)),
            _ => Err(
                "token is `authorization`, { header: NAME } or { cookie: NAME } (one of them)"
                    .into(),
            ),
        }
    }
}

/// How the token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Bearer,
    /// Sender-constrained (RFC 9449): a `DPoP` proof header must come with it.
    DPoP,
    /// From a configured header or cookie.
    Bare,
}

/// Why the credentials cannot be read (401, nothing said to the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("more than one {0}")]
    Ambiguous(&'static str),
    #[error("authorization scheme is not Bearer or DPoP")]
    Scheme,
    #[error("credentials are not visible ASCII")]
    Encoding,
    #[error("empty token")]
    Empty,
}

/// The token and its scheme, or none presented.
pub fn token<'a>(
    headers: &'a HeaderMap,
    source: &TokenSource,
) -> Result<Option<(&'a str, Scheme)>, CredentialsError> {
    match source {
        TokenSource::Authorization => {
            let Some(value) = single(headers, AUTHORIZATION.as_str(), "Authorization header")?
            else {
                return Ok(None);
            };
            let (scheme, token) = value.split_once(' ').ok_or(CredentialsError::Scheme)?;
            let scheme = if scheme.eq_ignore_ascii_case("bearer") {
                Scheme::Bearer
            } else if scheme.eq_ignore_ascii_case("dpop") {
                Scheme::DPoP
            } else {
                return Err(CredentialsError::Scheme);
            };
            Ok(Some((checked(token)?, scheme)))
        }
        TokenSource::Header(name) => match single(headers, name, "token header")? {
            Some(value) => Ok(Some((checked(value)?, Scheme::Bare))),
            None => Ok(None),
        },
        TokenSource::Cookie(name) => {
            let mut found = None;
            for header in headers.get_all(COOKIE) {
                let text = header.to_str().map_err(|_| CredentialsError::Encoding)?;
                for pair in text.split(';') {
                    if let Some((k, v)) = pair.trim().split_once('=')
                        && k == name
                    {
                        if found.is_some() {
                            return Err(CredentialsError::Ambiguous("token cookie"));
                        }
                        found = Some(v);
                    }
                }
            }
            found
                .map(|v| checked(v).map(|t| (t, Scheme::Bare)))
                .transpose()
        }
    }
}

/// Removes the token from where it was read (for the hop into the mesh, which gets the
/// verified claims instead): the `Authorization` header, the configured header, or the
/// one cookie from `Cookie` (the others stay).
pub fn remove(headers: &mut HeaderMap, source: &TokenSource) {
    match source {
        TokenSource::Authorization => {
            headers.remove(AUTHORIZATION);
        }
        TokenSource::Header(name) => {
            headers.remove(name.as_str());
        }
        TokenSource::Cookie(name) => {
            let kept: Vec<String> = headers
                .get_all(COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .map(str::trim)
                .filter(|pair| pair.split_once('=').is_none_or(|(k, _)| k != name))
                .filter(|pair| !pair.is_empty())
                .map(str::to_owned)
                .collect();
            headers.remove(COOKIE);
            if let Ok(v) = http::HeaderValue::from_str(&kept.join("; "))
                && !kept.is_empty()
            {
                headers.insert(COOKIE, v);
            }
        }
    }
}

fn single<'a>(
    headers: &'a HeaderMap,
    name: &str,
    what: &'static str,
) -> Result<Option<&'a str>, CredentialsError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CredentialsError::Ambiguous(what));
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| CredentialsError::Encoding)
}

/// A token: non-empty, no spaces or controls (a JWS compact form is base64url and dots).
fn checked(token: &str) -> Result<&str, CredentialsError> {
    if token.is_empty() {
        return Err(CredentialsError::Empty);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(CredentialsError::Encoding);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn bearer_and_dpop_from_authorization_and_bare_tokens_from_a_header_or_cookie() {
        let auth = TokenSource::Authorization;
        let h = headers(&[("authorization", "Bearer a.b.c")]);
        assert_eq!(token(&h, &auth), Ok(Some(("a.b.c", Scheme::Bearer))));
        let h = headers(&[("authorization", "dpop a.b.c")]);
        assert_eq!(token(&h, &auth), Ok(Some(("a.b.c", Scheme::DPoP))));
        assert_eq!(token(&HeaderMap::new(), &auth), Ok(None));
        let h = headers(&[("x-token", "a.b.c")]);
        assert_eq!(
            token(&h, &TokenSource::Header("x-token".into())),
            Ok(Some(("a.b.c", Scheme::Bare)))
        );
        let h = headers(&[("cookie", "theme=dark; session=a.b.c")]);
        assert_eq!(
            token(&h, &TokenSource::Cookie("session".into())),
            Ok(Some(("a.b.c", Scheme::Bare)))
        );
        assert_eq!(token(&h, &TokenSource::Cookie("other".into())), Ok(None));
    }

    #[test]
    fn the_token_is_removed_from_where_it_was_read_and_nothing_else() {
        let mut h = headers(&[("authorization", "Bearer t"), ("x-keep", "1")]);
        remove(&mut h, &TokenSource::Authorization);
        assert!(h.get("authorization").is_none() && h.get("x-keep").is_some());
        let mut h = headers(&[("cookie", "a=1; session=t"), ("cookie", "b=2")]);
        remove(&mut h, &TokenSource::Cookie("session".into()));
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");
        let mut h = headers(&[("cookie", "session=t")]);
        remove(&mut h, &TokenSource::Cookie("session".into()));
        assert!(h.get("cookie").is_none());
    }

    #[test]
    fn ambiguous_or_malformed_credentials_are_refused() {
        let auth = TokenSource::Authorization;
        let cases = [
            (
                headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]),
                CredentialsError::Ambiguous("Authorization header"),
            ),
            (
                headers(&[("authorization", "Basic dXNlcjpwYXNz")]),
                CredentialsError::Scheme,
            ),
            (
                headers(&[("authorization", "Bearer")]),
                CredentialsError::Scheme,
            ),
            (
                headers(&[("authorization", "Bearer ")]),
                CredentialsError::Empty,
            ),
            (
                headers(&[("authorization", "Bearer a b")]),
                CredentialsError::Encoding,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(token(&h, &auth), Err(want.clone()), "{want}");
        }
        let cookie = TokenSource::Cookie("session".into());
        let twice = headers(&[("cookie", "session=a"), ("cookie", "session=b")]);
        assert_eq!(
            token(&twice, &cookie),
            Err(CredentialsError::Ambiguous("token cookie"))
        );
        let twice_in_one = headers(&[("cookie", "session=a; session=b")]);
        assert_eq!(
            token(&twice_in_one, &cookie),
            Err(CredentialsError::Ambiguous("token cookie"))
        );
    }
}
