//! The operator's configuration, checked in one place. Every variable with a structured
//! value is parsed here; a bad one is an error naming the variable, shown by `/healthz` and
//! logged by every scheduled run, never replaced by a silent default. Components read the
//! values through these parsers too, so what `/healthz` accepts is what they use.

use crate::{retention, sinks};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageMode {
    Store,
    Both,
    StreamOnly,
}

impl StorageMode {
    /// An unset or empty variable is `store`, the documented default.
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim).unwrap_or("") {
            "" | "store" => Ok(Self::Store),
            "both" => Ok(Self::Both),
            "stream-only" => Ok(Self::StreamOnly),
            other => Err(format!("{other:?}: expected store, both or stream-only")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Both => "both",
            Self::StreamOnly => "stream-only",
        }
    }
}

/// Variables whose values are counts: empty means the documented default.
const COUNTS: &[&str] = &[
    "checkpoint_interval_seconds",
    "retention_scan_per_run",
    "sink_batches_per_run",
    "reconcile_max_requests",
    "github_audit_max_requests",
];

/// Every variable `check` understands.
pub const CHECKED: &[&str] = &[
    "storage_mode",
    "sqlite_synchronous",
    "sinks",
    "retention_policies",
    "reconcile_since",
    "gitlab_api_projects",
    "checkpoint_interval_seconds",
    "retention_scan_per_run",
    "sink_batches_per_run",
    "reconcile_max_requests",
    "github_audit_max_requests",
    "findings_rules",
    "findings_deleted_within",
    "findings_burst",
];

/// What is wrong with one variable's value, if anything.
pub fn check(variable: &str, value: &str) -> Result<(), String> {
    let value = value.trim();
    match variable {
        "storage_mode" => StorageMode::parse(Some(value)).map(|_| ()),
        "sqlite_synchronous" => Synchronous::parse(value).map(|_| ()),
        "sinks" => sinks::parse(value).map(|_| ()),
        "retention_policies" => retention::parse(value).map(|_| ()),
        "reconcile_since" if !value.is_empty() && crate::time::parse(value).is_none() => Err(format!(
            "{value:?}: expected an RFC 3339 time such as 2026-01-01T00:00:00Z"
        )),
        "gitlab_api_projects" => match value
            .split(',')
            .map(str::trim)
            .find(|p| !p.is_empty() && p.parse::<u64>().is_err())
        {
            Some(p) => Err(format!("{p:?}: expected numeric project ids, comma-separated")),
            None => Ok(()),
        },
        "findings_rules" if !value.is_empty() => crate::findings::parse_enabled(value).map(|_| ()),
        "findings_deleted_within" if !value.is_empty() => crate::findings::parse_within(value).map(|_| ()),
        "findings_burst" if !value.is_empty() => crate::findings::parse_burst(value).map(|_| ()),
        v if COUNTS.contains(&v) && !value.is_empty() => match value.parse::<u64>() {
            Ok(n) if n > 0 || v == "checkpoint_interval_seconds" => Ok(()),
            _ => Err(format!("{value:?}: expected a whole number above 0")),
        },
        _ => Ok(()),
    }
}

/// A count variable's value: `default` when unset or empty, an error naming the variable
/// when it does not parse (never a silent default: the work it sizes is refused instead).
pub fn count(variable: &str, value: Option<&str>, default: u64) -> Result<u64, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(default),
        Some(v) => check(variable, v)
            .and_then(|()| v.parse().map_err(|_| format!("{v:?}: expected a whole number")))
            .map_err(|e| format!("{variable}: {e}")),
    }
}

/// How SQLite makes a commit durable (`sqlite_synchronous`). `full`, the default, syncs
/// the write-ahead log at every commit: an acknowledged delivery survives a power cut.
/// `normal` syncs it at checkpoints only: it survives the process being killed, not the
/// machine losing power (SQLite's "WAL mode with synchronous=NORMAL").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

impl Synchronous {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "full" => Ok(Synchronous::Full),
            "normal" => Ok(Synchronous::Normal),
            other => Err(format!("{other:?}: expected full or normal")),
        }
    }

    /// The statement that sets it on a connection.
    pub fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "PRAGMA synchronous = FULL",
            Synchronous::Normal => "PRAGMA synchronous = NORMAL",
        }
    }
}

/// The checkpoint interval when `checkpoint_interval_seconds` is unset, or unreadable (see
/// `platform::checkpoint_interval`).
pub const DEFAULT_CHECKPOINT_INTERVAL_SECS: i64 = 10;

/// How often to sign a checkpoint, in seconds (`checkpoint_interval_seconds`, default 10;
/// 0 signs one with every append).
pub fn checkpoint_interval(value: Option<&str>) -> Result<i64, String> {
    let secs = count(
        "checkpoint_interval_seconds",
        value,
        DEFAULT_CHECKPOINT_INTERVAL_SECS as u64,
    )?;
    i64::try_from(secs).map_err(|_| format!("checkpoint_interval_seconds: {secs} is too large"))
}

/// Problems with the given (variable, value) pairs, as "variable: message".
pub fn problems<'a>(values: impl IntoIterator<Item = (&'a str, Option<String>)>) -> Vec<String> {
    values
        .into_iter()
        .filter_map(|(k, v)| check(k, v.as_deref().unwrap_or("")).err().map(|e| format!("{k}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bad_value_names_its_variable() {
        let good = [
            ("storage_mode", Some("stream-only".to_string())),
            (
                "sinks",
                Some(r#"[{"name":"r","kind":"redis","address":"redis://127.0.0.1:6379"}]"#.into()),
            ),
            ("retention_policies", Some("job.*=30d, compact=7d".into())),
            ("reconcile_since", Some("2026-01-01T00:00:00Z".into())),
            ("gitlab_api_projects", Some("21, 22".into())),
            ("sink_batches_per_run", Some("50".into())),
            ("checkpoint_interval_seconds", Some("0".into())),
            ("sqlite_synchronous", Some("NORMAL".into())),
            ("sqlite_synchronous", None),
            ("findings_rules", Some("deleted_unseen,burst_of_deletions".into())),
            ("findings_deleted_within", Some("12h".into())),
            ("findings_burst", Some("10/1h".into())),
            ("storage_mode", None),
            ("sinks", Some(String::new())),
        ];
        assert_eq!(problems(good), Vec::<String>::new());
        for (k, v) in [
            ("storage_mode", "stream_only"),
            ("sinks", "[{\"kind\":\"ftp\"}]"),
            ("retention_policies", "job.*=soon"),
            ("reconcile_since", "last tuesday"),
            ("gitlab_api_projects", "21, grp/app"),
            ("sink_batches_per_run", "0"),
            ("retention_scan_per_run", "lots"),
            ("sqlite_synchronous", "off"),
            ("findings_rules", "all"),
            ("findings_deleted_within", "1 day"),
            ("findings_burst", "5"),
        ] {
            let found = problems([(k, Some(v.to_string()))]);
            assert_eq!(found.len(), 1, "{k}={v}");
            assert!(found[0].starts_with(&format!("{k}: ")), "{}", found[0]);
        }
    }

    #[test]
    fn checkpoint_interval_is_parsed_or_refused_never_defaulted() {
        assert_eq!(checkpoint_interval(None), Ok(10));
        assert_eq!(checkpoint_interval(Some(" ")), Ok(10));
        assert_eq!(checkpoint_interval(Some("0")), Ok(0));
        assert_eq!(checkpoint_interval(Some("3600")), Ok(3600));
        for bad in ["ten", "-5", "1.5", "99999999999999999999"] {
            let e = checkpoint_interval(Some(bad)).unwrap_err();
            assert!(e.starts_with("checkpoint_interval_seconds: "), "{bad}: {e}");
        }
        assert!(checkpoint_interval(Some("18446744073709551615")).is_err());
    }
}
