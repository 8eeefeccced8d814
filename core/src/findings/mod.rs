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
        Rules {
            enabled: [true; 4],
            deleted_within_secs: 24 * 3600,
            burst_count: 5,
            burst_window_secs: 600,
        }
    }
}

fn index(rule: FindingRule) -> usize {
    FindingRule::ALL
        .iter()
        .position(|r| *r == rule)
        .expect("every rule is in ALL")
}

impl Rules {
    /// No rule runs (the benchmarks' floor, and `findings_rules = none`).
    pub const NONE: Rules = Rules {
        enabled: [false; 4],
        deleted_within_secs: 24 * 3600,
        burst_count: 5,
        burst_window_secs: 600,
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
        let mut out = Rules::default();
        if let Some(list) = rules.map(str::trim).filter(|s| !s.is_empty()) {
            out.enabled = [false; 4];
            if list != "none" {
                for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let rule = FindingRule::parse(name).ok_or_else(|| {
                        let known: Vec<&str> = FindingRule::ALL.iter().map(|r| r.as_str()).collect();
                        format!(
                            "findings_rules: {name:?}: expected none or some of {}",
                            known.join(", ")
                        )
                    })?;
                    out.enabled[index(rule)] = true;
                }
            }
        }
        if let Some(d) = deleted_within.map(str::trim).filter(|s| !s.is_empty()) {
            out.deleted_within_secs = duration(d)
                .ok_or_else(|| format!("findings_deleted_within: {d:?}: expected a duration such as 24h"))?;
        }
        if let Some(b) = burst.map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || format!("findings_burst: {b:?}: expected COUNT/DURATION such as 5/10m");
            let (count, window) = b.split_once('/').ok_or_else(bad)?;
            out.burst_count = count.trim().parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
            out.burst_window_secs = duration(window.trim()).ok_or_else(bad)?;
        }
        Ok(out)
    }
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
