//! Request path normalization, so that a policy and the app see the same path.
//!
//! `/public/../admin`, `//admin` and `/%61dmin` must not slip past a rule on `/admin`: the
//! path-confusion class of proxy CVEs. The inbound side normalizes per RFC 3986 before any
//! matching — unreserved characters percent-decoded, `.` and `..` segments removed, repeated
//! slashes merged — and forwards the normalized path. What cannot be normalized without
//! guessing how the app reads it is refused: an encoded `/` or `\`, a NUL, a `..` above the
//! root, broken percent-encoding, a literal backslash.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    EncodedSeparator,
    Nul,
    Backslash,
    AboveRoot,
    BadPercentEncoding,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::NotAbsolute => "path does not start with '/'",
            PathError::EncodedSeparator => "path contains an encoded '/' or '\\'",
            PathError::Nul => "path contains NUL",
            PathError::Backslash => "path contains '\\'",
            PathError::AboveRoot => "path climbs above the root with '..'",
            PathError::BadPercentEncoding => "path has invalid percent-encoding",
        })
    }
}

impl std::error::Error for PathError {}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalizes a request path (without its query string). Returns it unchanged (borrowed
/// work avoided by the caller comparing) when it is already normal.
pub fn normalize_path(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    // 1. Percent-decode unreserved characters; refuse what must not be decoded.
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadPercentEncoding);
                };
                let b = hi * 16 + lo;
                match b {
                    b'/' | b'\\' => return Err(PathError::EncodedSeparator),
                    0 => return Err(PathError::Nul),
                    b if is_unreserved(b) => decoded.push(b as char),
                    b => {
                        decoded.push('%');
                        decoded.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
                        decoded.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
                    }
                }
                i += 3;
            }
            0 => return Err(PathError::Nul),
            b'\\' => return Err(PathError::Backslash),
            _ => {
                // Copy a run of ordinary bytes at once (keeps multi-byte UTF-8 whole).
                let end = bytes[i..]
                    .iter()
                    .position(|&b| matches!(b, b'%' | 0 | b'\\'))
                    .map_or(bytes.len(), |n| i + n);
                decoded.push_str(&raw[i..end]);
                i = end;
            }
        }
    }
    // 2. Merge slashes and remove dot segments.
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/').skip(1) {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(decoded.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_per_rfc3986() {
        for (raw, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/public/../admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/%61dmin", "/admin"),
            ("/a/%2e%2e/x", "/x"),
            ("/a/%2E%2E/admin", "/admin"),
            ("/%7euser", "/~user"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/ünï", "/ünï"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_what_cannot_be_normalized_safely() {
        for (raw, want) in [
            ("a/b", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
            ("/a%2Fb", PathError::EncodedSeparator),
            ("/a%2fb", PathError::EncodedSeparator),
            ("/a%5Cb", PathError::EncodedSeparator),
            ("/a%00b", PathError::Nul),
            ("/a\0b", PathError::Nul),
            ("/a\\b", PathError::Backslash),
            ("/..", PathError::AboveRoot),
            ("/a/../../b", PathError::AboveRoot),
            ("/%2e%2e/%2e%2e/x", PathError::AboveRoot),
            ("/a%2", PathError::BadPercentEncoding),
            ("/a%zz", PathError::BadPercentEncoding),
        ] {
            assert_eq!(normalize_path(raw), Err(want), "{raw:?}");
        }
    }
}
