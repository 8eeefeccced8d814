//! GitLab sends times as `2023-01-10 13:50:02 UTC` (webhooks) or ISO 8601 (API, newer hooks).
//! Every time pipetrail stores is RFC 3339 UTC with milliseconds, so strings sort as times.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, TimeZone, Utc};

pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.with_timezone(&Utc));
    }
    if let Some(naive) = t.strip_suffix(" UTC") {
        for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M:%S"] {
            if let Ok(n) = NaiveDateTime::parse_from_str(naive, fmt) {
                return Some(Utc.from_utc_datetime(&n));
            }
        }
    }
    // `2016-08-12 15:23:28 +0200` appears in some older hooks.
    DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S %z")
        .ok()
        .map(|dt| dt.with_timezone(&Utc))
}

pub fn format(dt: DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Normalizes a forge timestamp; `None` when it is not a time we can read.
pub fn normalize(text: &str) -> Option<String> {
    parse(text).map(format)
}

/// `text` moved by `secs` seconds (negative: back), in the ledger's format; `text` itself
/// when it is not a time. For back-off deadlines and retention cut-offs.
pub fn plus_seconds(text: &str, secs: i64) -> String {
    parse(text)
        .map(|t| format(t + chrono::Duration::seconds(secs)))
        .unwrap_or_else(|| text.to_string())
}

pub fn from_unix_millis(ms: i64) -> String {
    format(Utc.timestamp_millis_opt(ms).single().unwrap_or_default())
}

/// The current time, as every stored timestamp is written (WASI's clock in the components).
pub fn now() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    from_unix_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_gitlab_formats() {
        assert_eq!(
            normalize("2023-01-10 13:50:02 UTC").unwrap(),
            "2023-01-10T13:50:02.000Z"
        );
        assert_eq!(
            normalize("2021-02-23T02:41:37.886Z").unwrap(),
            "2021-02-23T02:41:37.886Z"
        );
        assert_eq!(
            normalize("2016-08-12T17:23:21+02:00").unwrap(),
            "2016-08-12T15:23:21.000Z"
        );
        assert_eq!(
            normalize("2016-08-12 15:23:28 +0200").unwrap(),
            "2016-08-12T13:23:28.000Z"
        );
        assert!(normalize("yesterday").is_none());
        assert!(normalize("2023-13-40 99:00:00 UTC").is_none());
    }
}
