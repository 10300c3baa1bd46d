//! Time as logs, status files and admin endpoints write it.

use std::time::SystemTime;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// RFC 3339 in UTC, whole seconds.
pub fn rfc3339(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// RFC 3339 in UTC with milliseconds, for audit lines.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    let ms = t.millisecond();
    let t = t.replace_nanosecond(u32::from(ms) * 1_000_000).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

/// Seconds since the Unix epoch (0 for a time before it).
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_millis(t), "2023-11-14T22:13:20.123Z");
        assert_eq!(unix_secs(t), 1_700_000_000);
        assert_eq!(
            unix_secs(SystemTime::UNIX_EPOCH - Duration::from_secs(5)),
            0
        );
    }
}
