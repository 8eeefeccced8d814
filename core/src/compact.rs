//! Compaction: folds what pruned entries leave behind (their rows, leaves, inner tree
//! nodes and tombstones) into the hash of the aligned subtree that covers them, so a ledger
//! whose events expire (stream-only, or a retention policy for every action) stops growing.
//!
//! An aligned range of 2^k entries qualifies when every entry in it is pruned (or already
//! compacted), was recorded before the horizon, lies under the latest signed checkpoint, and
//! every sink has passed it. Its rows, tombstones and inner nodes are deleted; the subtree's
//! node stays and `compacted` records the range. Compacted siblings merge into their
//! parent, so a fully compacted prefix is O(log n) rows.
//!
//! Still provable afterwards: the root of every later tree, inclusion proofs of the entries
//! that remain, consistency proofs between checkpoints outside compacted ranges. `verify`
//! folds each range's stored hash in place of its leaves; the signed checkpoints above it
//! prove that hash unchanged. Given up: proofs for compacted entries, checkpoints strictly
//! inside a compacted range (deleted), and de-duplication against deliveries older than the
//! horizon (their rows go too).

use crate::merkle::{self, NodeRef};
use crate::retention::{Keep, Policies};
use crate::sql::{DbError, Sql, Val, in_writer};
use crate::store;

pub struct Options<'a> {
    pub now: &'a str,
    /// Only entries recorded more than this many days before `now`.
    pub days: u32,
    /// Every sink has delivered the entries below this seq (None: no sinks).
    pub delivered_below: Option<u64>,
    /// In stream-only mode every body is pruned once delivered, so an entry still holding its
    /// body is waiting, never kept for good.
    pub stream_only: bool,
    /// Entries looked at in one run.
    pub scan: usize,
}

#[derive(Debug, Default, PartialEq)]
pub struct Report {
    /// Entries folded into subtree hashes in this run.
    pub compacted: u64,
    pub deliveries: u64,
    pub pipelines: u64,
    pub checkpoints: u64,
    /// Where the next run starts.
    pub next_seq: u64,
}

const CURSOR: &str = "compact:next_seq";
const DELIVERY_CURSOR: &str = "compact:after_delivery";

/// One bounded compaction run in one writer transaction. It stops at the first
/// entry that may still change: one holding a body a policy will prune, one too recent, or
/// one that is neither pruned nor holds a body (a gap `verify` must see, never hidden).
pub async fn run<S: Sql>(db: &S, policies: &Policies, opts: &Options<'_>) -> Result<Report, DbError> {
    if crate::time::parse(opts.now).is_none() {
        return Err(DbError::Other(format!("not a time: {}", opts.now)));
    }
    let cutoff = crate::time::plus_seconds(opts.now, -(opts.days as i64) * 86_400);
    in_writer(db, async || {
        let mut report = Report::default();
        // Read before any range is written: the total then grows by what this run folds.
        let before = store::compacted_entries(db).await?;
        let mut next: u64 = store::setting(db, CURSOR)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let signed = store::latest_checkpoint(db).await?.map_or(0, |c| c.size);
        let limit = opts.delivered_below.map_or(signed, |d| d.min(signed));
        let rows = db
            .query(
                "SELECT e.seq, e.recorded_at, e.action, e.project_id, e.project_path, b.seq IS NOT NULL, p.seq IS NOT NULL \
                 FROM events e LEFT JOIN event_bodies b ON b.seq = e.seq LEFT JOIN pruned p ON p.seq = e.seq \
                 WHERE e.seq >= ? AND e.seq < ? ORDER BY e.seq LIMIT ?",
                &[Val::int(next), Val::int(limit), Val::Int(opts.scan as i64)],
            )
            .await?;
        let mut run_start = next;
        for r in &rows {
            let seq = r[0].as_i64().unwrap_or(-1) as u64;
            let recorded = r[1].as_str().unwrap_or_default();
            let (has_body, tombstone) = (r[5].as_i64() == Some(1), r[6].as_i64() == Some(1));
            if seq != next || recorded >= cutoff.as_str() || (!has_body && !tombstone) {
                break;
            }
            if !has_body {
                next += 1;
                continue;
            }
            let kept_for_good = !opts.stream_only
                && policies
                    .for_event(r[2].as_str().unwrap_or_default(), r[3].as_i64().unwrap_or(0), r[4].as_str())
                    .is_none_or(|p| p.keep == Keep::Forever);
            if !kept_for_good {
                break;
            }
            // A kept entry ends a run of pruned ones; the cursor passes it for good.
            compact_range(db, run_start, seq, opts.now, &mut report).await?;
            next = seq + 1;
            run_start = next;
        }
        compact_range(db, run_start, next, opts.now, &mut report).await?;
        store::put_setting(db, CURSOR, &next.to_string()).await?;
        store::put_setting(db, store::COMPACTED_TOTAL, &(before + report.compacted).to_string()).await?;
        report.deliveries = drop_deliveries(db, next, &cutoff, opts.scan).await?;
        report.next_seq = next;
        Ok(report)
    })
    .await
}

/// Compacts `start..end` (all pruned or compacted) as the aligned subtrees that tile it.
async fn compact_range<S: Sql>(db: &S, start: u64, end: u64, now: &str, report: &mut Report) -> Result<(), DbError> {
    // range_nodes tiles any range with the largest aligned subtrees, left to right.
    for (level, idx) in merkle::range_nodes(start, end) {
        compact_subtree(db, (level, idx), now, report).await?;
        report.compacted += 1 << level;
    }
    Ok(())
}

async fn compact_subtree<S: Sql>(db: &S, node: NodeRef, now: &str, report: &mut Report) -> Result<(), DbError> {
    let (level, idx) = node;
    let (start, end) = (idx << level, (idx + 1) << level);
    let range = [Val::int(start), Val::int(end)];
    let pipelines = db
        .query(
            "SELECT DISTINCT instance, pipeline_id FROM events WHERE seq >= ? AND seq < ? AND pipeline_id IS NOT NULL",
            &range,
        )
        .await?;
    db.exec("DELETE FROM events WHERE seq >= ? AND seq < ?", &range).await?;
    db.exec("DELETE FROM event_bodies WHERE seq >= ? AND seq < ?", &range)
        .await?;
    db.exec("DELETE FROM pruned WHERE seq >= ? AND seq < ?", &range).await?;
    db.exec("DELETE FROM compacted WHERE start >= ? AND start < ?", &range)
        .await?;
    // Node keys grow with the leaf that completed them (merkle::node_key): every node
    // inside the subtree sorts between its first leaf and the subtree's own node.
    db.exec(
        "DELETE FROM tree_nodes WHERE id >= ? AND id < ?",
        &[Val::Int(merkle::leaf_key(start)), Val::Int(merkle::node_key(node))],
    )
    .await?;
    let (mut level, mut idx) = node;
    // Merge with a compacted left sibling, upwards. A right sibling is never compacted
    // before its left one: runs advance left to right.
    while idx % 2 == 1 {
        let sibling = (idx - 1) << level;
        let found = db
            .query(
                "SELECT 1 FROM compacted WHERE start = ? AND level = ?",
                &[Val::int(sibling), Val::Int(level as i64)],
            )
            .await?;
        if found.is_empty() {
            break;
        }
        db.exec("DELETE FROM compacted WHERE start = ?", &[Val::int(sibling)])
            .await?;
        db.exec(
            "DELETE FROM tree_nodes WHERE id IN (?, ?)",
            &[
                Val::Int(merkle::node_key((level, idx - 1))),
                Val::Int(merkle::node_key((level, idx))),
            ],
        )
        .await?;
        level += 1;
        idx /= 2;
    }
    let (start, end) = (idx << level, (idx + 1) << level);
    db.exec(
        "INSERT INTO compacted (start, level, compacted_at) VALUES (?, ?, ?)",
        &[Val::int(start), Val::Int(level as i64), Val::text(now)],
    )
    .await?;
    // A checkpoint strictly inside the range can no longer be recomputed.
    db.exec(
        "DELETE FROM checkpoints WHERE size > ? AND size < ?",
        &[Val::int(start), Val::int(end)],
    )
    .await?;
    report.checkpoints += db.changes().await?;
    for p in &pipelines {
        let key = [p[0].clone(), p[1].clone()];
        let left = db
            .query(
                "SELECT 1 FROM events WHERE pipeline_id = ? AND instance = ? LIMIT 1",
                &[p[1].clone(), p[0].clone()],
            )
            .await?;
        if !left.is_empty() {
            continue;
        }
        for table in ["pipelines", "jobs", "api_watch"] {
            db.exec(
                &format!("DELETE FROM {table} WHERE instance = ? AND pipeline_id = ?"),
                &key,
            )
            .await?;
            if table == "pipelines" {
                report.pipelines += db.changes().await?;
            }
        }
    }
    Ok(())
}

/// Drops the records of deliveries older than the horizon whose events are all compacted
/// (or that recorded none), in id order from a cursor. A later copy of such a delivery is
/// no longer recognised as a duplicate: that is what the horizon means.
async fn drop_deliveries<S: Sql>(db: &S, next_seq: u64, cutoff: &str, scan: usize) -> Result<u64, DbError> {
    let after: i64 = store::setting(db, DELIVERY_CURSOR)
        .await?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SQLite gives a new row the largest id plus one, so deleting the newest record would
    // hand its id out again, behind the cursor. The newest record always stays.
    let newest = db.query("SELECT MAX(id) FROM deliveries", &[]).await?;
    let newest = newest.first().and_then(|r| r[0].as_i64()).unwrap_or(0);
    let rows = db
        .query(
            "SELECT id, received_at, events, first_seq FROM deliveries WHERE id > ? AND id < ? ORDER BY id LIMIT ?",
            &[Val::Int(after), Val::Int(newest), Val::Int(scan as i64)],
        )
        .await?;
    let mut doomed = Vec::new();
    let mut cursor = after;
    for r in &rows {
        let id = r[0].as_i64().unwrap_or(0);
        let (events, first) = (r[2].as_i64().unwrap_or(0), r[3].as_i64().unwrap_or(0));
        if r[1].as_str().unwrap_or_default() >= cutoff || (events > 0 && (first + events) as u64 > next_seq) {
            break;
        }
        let surviving = events > 0
            && !db
                .query(
                    "SELECT 1 FROM events WHERE seq >= ? AND seq < ? LIMIT 1",
                    &[Val::Int(first), Val::Int(first + events)],
                )
                .await?
                .is_empty();
        if !surviving {
            doomed.push(Val::Int(id));
        }
        cursor = id;
    }
    for chunk in doomed.chunks(400) {
        let marks = crate::sql::marks(chunk.len());
        db.exec(
            &format!("DELETE FROM delivery_bodies WHERE delivery IN ({marks})"),
            chunk,
        )
        .await?;
        db.exec(&format!("DELETE FROM deliveries WHERE id IN ({marks})"), chunk)
            .await?;
    }
    store::put_setting(db, DELIVERY_CURSOR, &cursor.to_string()).await?;
    Ok(doomed.len() as u64)
}
