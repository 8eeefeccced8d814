//! Findings: facts about facts. A rule reads what the ledger holds about a pipeline (or an
//! actor's deletions) and, when it matches, a `finding.raised` event is appended beside the
//! facts it names, so a finding is as immutable as they are and reaches every sink.
//!
//! `rules` is the pure part (a pipeline's events in, drafts out); `evaluate` is the store
//! driver run inside the writer transaction of every integration, so a late log line or
//! audit event that completes a match raises the finding when it arrives.

pub mod evaluate;
pub mod list;
pub mod rules;

pub use evaluate::{evaluate, raise};
pub use list::{FindingFilter, list};

use crate::model::FindingRule;

/// Which rules run, and their thresholds (variables `findings_rules`,
/// `findings_deleted_within`, `findings_burst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    enabled: [bool; 4],
    /// Rule 1: a deletion this soon after the pipeline ended matches whoever deleted it.
    pub deleted_within_secs: i64,
    /// Rule 4: more than `burst_count` deletions by one actor within `burst_window_secs`.
    pub burst_count: u32,
    pub burst_window_secs: i64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules::DEFAULT
    }
}

fn index(rule: FindingRule) -> usize {
    FindingRule::ALL
        .iter()
        .position(|r| *r == rule)
        .expect("every rule is in ALL")
}

impl Rules {
    /// Every rule, at the documented thresholds.
    pub const DEFAULT: Rules = Rules {
        enabled: [true; 4],
        deleted_within_secs: 24 * 3600,
        burst_count: 5,
        burst_window_secs: 600,
    };

    /// No rule runs (the benchmarks' floor, and `findings_rules = none`).
    pub const NONE: Rules = Rules {
        enabled: [false; 4],
        ..Rules::DEFAULT
    };

    pub fn enabled(&self, rule: FindingRule) -> bool {
        self.enabled[index(rule)]
    }

    pub fn any(&self) -> bool {
        self.enabled.iter().any(|e| *e)
    }

    /// Reads the three variables; empty or unset means the documented default. An error
    /// names the variable and says what was expected.
    pub fn parse(rules: Option<&str>, deleted_within: Option<&str>, burst: Option<&str>) -> Result<Rules, String> {
        fn given(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|s| !s.is_empty())
        }
        let named = |variable: &'static str| move |e: String| format!("{variable}: {e}");
        let mut out = Rules::DEFAULT;
        if let Some(list) = given(rules) {
            out.enabled = parse_enabled(list).map_err(named("findings_rules"))?;
        }
        if let Some(d) = given(deleted_within) {
            out.deleted_within_secs = parse_within(d).map_err(named("findings_deleted_within"))?;
        }
        if let Some(b) = given(burst) {
            (out.burst_count, out.burst_window_secs) = parse_burst(b).map_err(named("findings_burst"))?;
        }
        Ok(out)
    }
}

/// `findings_rules`: `none`, or rule names, comma-separated.
pub fn parse_enabled(list: &str) -> Result<[bool; 4], String> {
    let mut enabled = [false; 4];
    if list.trim() == "none" {
        return Ok(enabled);
    }
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let rule = FindingRule::parse(name).ok_or_else(|| {
            let known: Vec<&str> = FindingRule::ALL.iter().map(|r| r.as_str()).collect();
            format!("{name:?}: expected none or some of {}", known.join(", "))
        })?;
        enabled[index(rule)] = true;
    }
    Ok(enabled)
}

/// `findings_deleted_within`: a duration such as `24h`.
pub fn parse_within(text: &str) -> Result<i64, String> {
    duration(text.trim()).ok_or_else(|| format!("{text:?}: expected a duration such as 24h"))
}

/// `findings_burst`: `COUNT/DURATION`, such as `5/10m`.
pub fn parse_burst(text: &str) -> Result<(u32, i64), String> {
    let bad = || format!("{text:?}: expected COUNT/DURATION such as 5/10m");
    let (count, window) = text.trim().split_once('/').ok_or_else(bad)?;
    let count = count.trim().parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
    Ok((count, duration(window.trim()).ok_or_else(bad)?))
}

/// `90s`, `10m`, `24h`, `7d`: a positive whole number of a unit.
fn duration(text: &str) -> Option<i64> {
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return None,
    };
    let n: i64 = text[..text.len() - 1].parse().ok().filter(|n| *n > 0)?;
    n.checked_mul(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_parse_or_name_themselves() {
        assert_eq!(Rules::parse(None, None, None), Ok(Rules::default()));
        assert_eq!(Rules::parse(Some(" "), Some(""), Some("")), Ok(Rules::default()));
        let r = Rules::parse(Some("deleted_unseen, burst_of_deletions"), Some("90m"), Some("3/1h")).unwrap();
        assert!(r.enabled(FindingRule::DeletedUnseen) && r.enabled(FindingRule::BurstOfDeletions));
        assert!(!r.enabled(FindingRule::DeletedAfterActing) && !r.enabled(FindingRule::CanceledBySomeoneElse));
        assert_eq!(
            (r.deleted_within_secs, r.burst_count, r.burst_window_secs),
            (5400, 3, 3600)
        );
        assert!(!Rules::parse(Some("none"), None, None).unwrap().any());
        for (rules, within, burst, variable) in [
            (Some("deleted_after"), None, None, "findings_rules"),
            (None, Some("24"), None, "findings_deleted_within"),
            (None, Some("-1h"), None, "findings_deleted_within"),
            (None, None, Some("5"), "findings_burst"),
            (None, None, Some("0/10m"), "findings_burst"),
            (None, None, Some("5/ten minutes"), "findings_burst"),
        ] {
            let e = Rules::parse(rules, within, burst).unwrap_err();
            assert!(e.starts_with(&format!("{variable}: ")), "{e}");
        }
    }
}
