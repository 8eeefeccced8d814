//! Query-string parsing and validation for the query API. Every rejection names the
//! parameter, so `GET /api/v1/events?limt=5` says `limt` is unknown instead of ignoring it.

use crate::store::EventFilter;

#[derive(Debug, Clone, PartialEq)]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

impl ParamError {
    pub fn new(param: &str, message: impl Into<String>) -> Self {
        Self {
            param: param.into(),
            message: message.into(),
        }
    }
}

/// Splits `a=1&b=2`; a malformed pair is an error naming it.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, ParamError> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key =
                crate::encoding::form_decode(k).ok_or_else(|| ParamError::new(k, "malformed percent-encoding"))?;
            let value =
                crate::encoding::form_decode(v).ok_or_else(|| ParamError::new(&key, "malformed percent-encoding"))?;
            Ok((key, value))
        })
        .collect()
}

/// The filters `GET /api/v1/events` accepts (also listed in the README).
pub const EVENT_FILTERS: &[&str] = &[
    "forge", "project", "pipeline", "job", "actor", "action", "trigger", "ref", "source", "since", "until", "cursor",
    "limit", "order",
];

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

pub fn parse_u64(param: &str, v: &str) -> Result<u64, ParamError> {
    v.parse::<u64>()
        .ok()
        .filter(|n| i64::try_from(*n).is_ok())
        .ok_or_else(|| ParamError::new(param, format!("expected a non-negative integer, got {v:?}")))
}

/// Parses event-list parameters into a filter and a page size.
pub fn event_filter(pairs: &[(String, String)]) -> Result<(EventFilter, usize), ParamError> {
    event_filter_up_to(pairs, MAX_LIMIT)
}

/// As `event_filter`, with another largest page (exports allow bigger ones).
pub fn event_filter_up_to(pairs: &[(String, String)], max_limit: usize) -> Result<(EventFilter, usize), ParamError> {
    let mut f = EventFilter::default();
    let mut limit = DEFAULT_LIMIT;
    let mut seen: Vec<&str> = Vec::new();
    for (k, v) in pairs {
        if !EVENT_FILTERS.contains(&k.as_str()) {
            return Err(ParamError::new(
                k,
                format!("unknown parameter; accepted: {}", EVENT_FILTERS.join(", ")),
            ));
        }
        if seen.contains(&k.as_str()) {
            return Err(ParamError::new(k, "given more than once"));
        }
        seen.push(k);
        if v.is_empty() {
            return Err(ParamError::new(k, "is empty"));
        }
        let s = Some(v.clone());
        match k.as_str() {
            "forge" => {
                if !matches!(v.as_str(), "gitlab" | "github") {
                    return Err(ParamError::new(k, "expected gitlab or github"));
                }
                f.forge = s;
            }
            "project" => f.project = s,
            "pipeline" => f.pipeline = Some(parse_u64(k, v)?),
            "job" => f.job = Some(parse_u64(k, v)?),
            "actor" => f.actor = s,
            "action" => f.action = s,
            "trigger" => f.trigger = s,
            "ref" => f.git_ref = s,
            "source" => f.source = s,
            "since" | "until" => {
                let t = crate::time::normalize(v)
                    .ok_or_else(|| ParamError::new(k, format!("expected an RFC 3339 time, got {v:?}")))?;
                if k == "since" {
                    f.since = Some(t)
                } else {
                    f.until = Some(t)
                }
            }
            "cursor" => f.after_seq = Some(parse_u64(k, v)?),
            "order" => match v.as_str() {
                "asc" => f.descending = false,
                "desc" => f.descending = true,
                _ => return Err(ParamError::new(k, "expected asc or desc")),
            },
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=max_limit).contains(l))
                    .ok_or_else(|| ParamError::new(k, format!("expected an integer from 1 to {max_limit}")))?;
            }
            _ => unreachable!("checked against EVENT_FILTERS"),
        }
    }
    // Newest first, the cursor (the last seq of the previous page) bounds from above.
    if f.descending {
        f.before_seq = f.after_seq.take();
    }
    if let (Some(a), Some(b)) = (&f.since, &f.until)
        && a >= b
    {
        return Err(ParamError::new("until", "must be later than since"));
    }
    Ok((f, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        parse_query(q).unwrap()
    }

    #[test]
    fn parses_filters() {
        let (f, limit) = event_filter(&pairs(
            "project=gitlab-org%2Fgitlab-test&actor=user1&since=2016-08-12T00:00:00Z&limit=5&cursor=7",
        ))
        .unwrap();
        assert_eq!(f.project.as_deref(), Some("gitlab-org/gitlab-test"));
        assert_eq!(f.actor.as_deref(), Some("user1"));
        assert_eq!(f.since.as_deref(), Some("2016-08-12T00:00:00.000Z"));
        assert_eq!((limit, f.after_seq), (5, Some(7)));
        let (f, _) = event_filter(&pairs("cursor=7&order=desc")).unwrap();
        assert_eq!((f.descending, f.after_seq, f.before_seq), (true, None, Some(7)));
        let (f, _) = event_filter(&pairs("order=asc")).unwrap();
        assert!(!f.descending);
    }

    #[test]
    fn rejections_name_the_parameter() {
        for (q, param) in [
            ("limt=5", "limt"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("pipeline=abc", "pipeline"),
            ("pipeline=-1", "pipeline"),
            ("cursor=99999999999999999999", "cursor"),
            ("since=yesterday", "since"),
            ("since=2020-01-02T00:00:00Z&until=2020-01-01T00:00:00Z", "until"),
            ("actor=a&actor=b", "actor"),
            ("forge=svn", "forge"),
            ("actor=", "actor"),
            ("order=newest", "order"),
        ] {
            assert_eq!(event_filter(&pairs(q)).unwrap_err().param, param, "{q}");
        }
        assert_eq!(parse_query("a=%zz").unwrap_err().param, "a");
    }
}
