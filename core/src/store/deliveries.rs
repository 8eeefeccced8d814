//! Deliveries: what each source sent (dedupe key, payload hash, redacted body) and the
//! count of every outcome (recorded, duplicate, invalid, ...).

use std::collections::HashSet;

use super::{Result, text_at, u64_at};
use crate::sql::{Sql, Val};

/// Which of `keys` name a delivery already recorded: one query per 500 keys.
pub async fn deliveries_seen<S: Sql>(db: &S, keys: &[&str]) -> Result<HashSet<String>> {
    let mut seen = HashSet::new();
    for chunk in keys.chunks(500) {
        let marks = crate::sql::marks(chunk.len());
        let params: Vec<Val> = chunk.iter().map(|k| Val::text(*k)).collect();
        let rows = db
            .query(
                &format!("SELECT delivery_key FROM deliveries WHERE delivery_key IN ({marks})"),
                &params,
            )
            .await?;
        seen.extend(rows.iter().filter_map(|r| text_at(r, 0)));
    }
    Ok(seen)
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
    /// The inbox row it was accepted as, when it came through the inbox: how the request
    /// that accepted it finds what became of it.
    pub inbox_id: Option<i64>,
    /// When its facts were written (the batch's time): `received_at` to this is how long
    /// the delivery waited to be readable.
    pub integrated_at: &'a str,
}

const DELIVERY_COLUMNS: usize = 9;

/// Records deliveries and their kept bodies: two statements per 200 deliveries.
pub async fn insert_deliveries<S: Sql>(db: &S, records: &[DeliveryRecord<'_>]) -> Result<()> {
    for chunk in records.chunks(200) {
        let params: Vec<Val> = chunk
            .iter()
            .flat_map(|d| {
                [
                    Val::text(d.source),
                    Val::text(d.key),
                    Val::text(d.kind),
                    Val::text(d.received_at),
                    Val::text(d.payload_sha256),
                    Val::Int(d.events as i64),
                    Val::opt_int(d.first_seq),
                    d.inbox_id.map_or(Val::Null, Val::Int),
                    Val::text(d.integrated_at),
                ]
            })
            .collect();
        let rows = crate::sql::value_rows(DELIVERY_COLUMNS, chunk.len());
        // RETURNING's order is unspecified: the key pairs each id with its body.
        let ids = db
            .query(
                &format!(
                    "INSERT INTO deliveries (source, delivery_key, kind, received_at, payload_sha256, events, first_seq, inbox_id, integrated_at) VALUES {rows} RETURNING id, delivery_key"
                ),
                &params,
            )
            .await?;
        let bodies: Vec<Val> = ids
            .iter()
            .filter_map(|r| {
                let key = text_at(r, 1)?;
                let body = chunk.iter().find(|d| d.key == key)?.redacted_body?;
                Some([r[0].clone(), Val::text(body)])
            })
            .flatten()
            .collect();
        if !bodies.is_empty() {
            let rows = crate::sql::value_rows(2, bodies.len() / 2);
            db.exec(
                &format!("INSERT INTO delivery_bodies (delivery, body) VALUES {rows}"),
                &bodies,
            )
            .await?;
        }
    }
    Ok(())
}

/// Counts a delivery outcome (recorded, duplicate, ignored, unauthorized, invalid, ...).
pub async fn count_outcome<S: Sql>(db: &S, outcome: &str) -> Result<()> {
    count_outcomes(db, &[(outcome, 1)]).await
}

/// Adds to several outcomes' counts in one statement.
pub async fn count_outcomes<S: Sql>(db: &S, counts: &[(&str, u64)]) -> Result<()> {
    let counts: Vec<&(&str, u64)> = counts.iter().filter(|(_, n)| *n > 0).collect();
    if counts.is_empty() {
        return Ok(());
    }
    let params: Vec<Val> = counts.iter().flat_map(|(o, n)| [Val::text(*o), Val::int(*n)]).collect();
    let rows = crate::sql::value_rows(2, counts.len());
    db.exec(
        &format!(
            "INSERT INTO delivery_outcomes (outcome, count) VALUES {rows} ON CONFLICT(outcome) DO UPDATE SET count = delivery_outcomes.count + excluded.count"
        ),
        &params,
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
