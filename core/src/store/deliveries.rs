//! Deliveries: what each source sent (dedupe key, payload hash, redacted body) and the
//! count of every outcome (recorded, duplicate, invalid, ...).

use super::{Result, first_int, text_at, u64_at};
use crate::sql::{Sql, Val};

pub async fn delivery_seen<S: Sql>(db: &S, key: &str) -> Result<bool> {
    let rows = db
        .query("SELECT 1 FROM deliveries WHERE delivery_key = ?", &[Val::text(key)])
        .await?;
    Ok(!rows.is_empty())
}

pub struct DeliveryRecord<'a> {
    pub source: &'a str,
    pub key: &'a str,
    pub kind: &'a str,
    pub received_at: &'a str,
    pub payload_sha256: &'a str,
    pub events: usize,
    pub first_seq: Option<u64>,
    pub redacted_body: Option<&'a str>,
}

pub async fn insert_delivery<S: Sql>(db: &S, d: &DeliveryRecord<'_>) -> Result<()> {
    let rows = db
        .query(
            "INSERT INTO deliveries (source, delivery_key, kind, received_at, payload_sha256, events, first_seq) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            &[
                Val::text(d.source),
                Val::text(d.key),
                Val::text(d.kind),
                Val::text(d.received_at),
                Val::text(d.payload_sha256),
                Val::Int(d.events as i64),
                Val::opt_int(d.first_seq),
            ],
        )
        .await?;
    if let (Some(body), Some(id)) = (d.redacted_body, first_int(&rows)) {
        db.exec(
            "INSERT INTO delivery_bodies (delivery, body) VALUES (?, ?)",
            &[Val::Int(id), Val::text(body)],
        )
        .await?;
    }
    Ok(())
}

/// Counts a delivery outcome (recorded, duplicate, ignored, unauthorized, invalid, ...).
pub async fn count_outcome<S: Sql>(db: &S, outcome: &str) -> Result<()> {
    db.exec(
        "INSERT INTO delivery_outcomes (outcome, count) VALUES (?, 1) ON CONFLICT(outcome) DO UPDATE SET count = delivery_outcomes.count + 1",
        &[Val::text(outcome)],
    )
    .await
}

pub async fn outcome_counts<S: Sql>(db: &S) -> Result<Vec<(String, u64)>> {
    let rows = db
        .query("SELECT outcome, count FROM delivery_outcomes ORDER BY outcome", &[])
        .await?;
    Ok(rows
        .iter()
        .map(|r| (text_at(r, 0).unwrap_or_default(), u64_at(r, 1).unwrap_or(0)))
        .collect())
}
