//! The ledger: the append (events, canonical bodies, leaves and every completed parent, in
//! the caller's writer transaction), tree nodes, signed checkpoints and compacted ranges.
//!
//! Invariants (ARCHITECTURE.md): seq is dense from 0; one checkpoint per tree size (the
//! size is the key); an event id is stored once.

use super::{Result, first_int, text_at, u64_at};
use crate::merkle::{self, Hash};
use crate::model::Event;
use crate::note::{Checkpoint, NoteSigner};
use crate::sql::{DbError, Row, Sql, Val};

pub async fn tree_size<S: Sql>(db: &S) -> Result<u64> {
    // The largest key belongs to a node completed by the last leaf appended.
    let rows = db
        .query("SELECT id FROM tree_nodes ORDER BY id DESC LIMIT 1", &[])
        .await?;
    Ok(first_int(&rows).map_or(0, |id| (id as u64 >> 6) + 1))
}

/// Fetches stored nodes, in the order asked.
pub async fn nodes<S: Sql>(db: &S, refs: &[merkle::NodeRef]) -> Result<Vec<Hash>> {
    let mut out = Vec::with_capacity(refs.len());
    // One statement for the lot: the refs of a root or proof are O(log n).
    for chunk in refs.chunks(500) {
        let marks = crate::sql::marks(chunk.len());
        let params: Vec<Val> = chunk.iter().map(|&r| Val::Int(merkle::node_key(r))).collect();
        let rows = db
            .query(
                &format!("SELECT id, hash FROM tree_nodes WHERE id IN ({marks})"),
                &params,
            )
            .await?;
        for &r in chunk {
            let key = merkle::node_key(r);
            let hash = rows
                .iter()
                .find(|row| row[0].as_i64() == Some(key))
                .and_then(|row| row[1].as_blob())
                .and_then(|b| <Hash>::try_from(b).ok())
                .ok_or_else(|| DbError::Other(format!("tree node ({}, {}) is missing", r.0, r.1)))?;
            out.push(hash);
        }
    }
    Ok(out)
}

/// Hashes of the given leaf ranges, each folded from stored nodes (one query in all).
pub async fn range_hashes<S: Sql>(db: &S, ranges: &[(u64, u64)]) -> Result<Vec<Hash>> {
    let per_range: Vec<Vec<merkle::NodeRef>> = ranges.iter().map(|&(s, e)| merkle::range_nodes(s, e)).collect();
    let all: Vec<merkle::NodeRef> = per_range.iter().flatten().copied().collect();
    let hashes = nodes(db, &all).await?;
    let mut at = 0;
    Ok(per_range
        .iter()
        .map(|refs| {
            let h = merkle::fold_range(&hashes[at..at + refs.len()]).expect("ranges are non-empty");
            at += refs.len();
            h
        })
        .collect())
}

pub async fn root_at<S: Sql>(db: &S, size: u64) -> Result<Hash> {
    if size == 0 {
        return Ok(merkle::empty_root());
    }
    Ok(range_hashes(db, &[(0, size)]).await?[0])
}

/// Appends events to the ledger inside the caller's transaction: assigns seq, writes the
/// canonical body, the leaf and every completed parent. Events whose id is already stored
/// are dropped (a fact is recorded once). Returns the stored events.
pub async fn append<S: Sql>(db: &S, events: Vec<Event>) -> Result<Vec<(Event, Hash)>> {
    Ok(append_groups(db, vec![events], true).await?.remove(0))
}

/// `append` for many deliveries' facts at once (the sequencer's batch): one set of
/// statements for the lot, the stored events returned group by group, in order.
pub async fn append_batch<S: Sql>(db: &S, groups: Vec<Vec<Event>>) -> Result<Vec<Vec<(Event, Hash)>>> {
    append_groups(db, groups, true).await
}

/// The benchmark's baseline: `append` without the Merkle tree (events and leaves' inputs
/// only). Never used to record anything: a ledger without its tree cannot be verified.
#[doc(hidden)]
pub async fn append_without_tree<S: Sql>(db: &S, events: Vec<Event>) -> Result<Vec<(Event, Hash)>> {
    Ok(append_groups(db, vec![events], false).await?.remove(0))
}

async fn append_groups<S: Sql>(db: &S, groups: Vec<Vec<Event>>, tree: bool) -> Result<Vec<Vec<(Event, Hash)>>> {
    let mut out: Vec<Vec<(Event, Hash)>> = groups.iter().map(|_| Vec::new()).collect();
    if groups.iter().all(Vec::is_empty) {
        return Ok(out);
    }
    let size = if tree {
        tree_size(db).await?
    } else {
        let rows = db.query("SELECT COALESCE(MAX(seq) + 1, 0) FROM events", &[]).await?;
        first_int(&rows).unwrap_or(0) as u64
    };
    // The frontier (complete subtrees of the current tree) holds every left sibling a new
    // leaf can need; load it once and climb in memory.
    let mut frontier: Vec<(u32, Hash)> = {
        let refs = if tree { merkle::range_nodes(0, size) } else { Vec::new() };
        let hashes = nodes(db, &refs).await?;
        refs.iter().map(|r| r.0).zip(hashes).collect()
    };
    // Leaves and completed parents, written together after the loop: one statement per
    // batch instead of two per event.
    let mut new_nodes: Vec<(u32, u64, Hash)> = Vec::new();
    let mut new_bodies: Vec<(u64, String)> = Vec::new();
    let mut seq = size;
    // Which of these facts are stored already: one query for the lot, not one per event.
    let ids: Vec<&str> = groups.iter().flatten().map(|e| e.id.as_str()).collect();
    let known = stored_sources(db, &ids).await?;
    // Ids appended by this call, so a fact twice in one batch is stored once.
    let mut appended: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut new_rows: Vec<Val> = Vec::new();
    for (group, events) in groups.into_iter().enumerate() {
        for ev in events {
            if appended.contains(&ev.id) {
                continue;
            }
            let mut ev = match known.get(&ev.id).cloned() {
                None => ev,
                // The same fact from the same source is a repeat; from another, it is evidence.
                Some(source) if source == ev.evidence.source.as_str() => continue,
                Some(_) => {
                    let fact_id = ev.id.clone();
                    let c = crate::merge::confirmation(ev, &fact_id);
                    if appended.contains(&c.id) || stored_sources(db, &[&c.id]).await?.contains_key(&c.id) {
                        continue;
                    }
                    c
                }
            };
            ev.seq = seq;
            let body = String::from_utf8(ev.canonical_bytes()).expect("canonical JSON is UTF-8");
            let leaf = merkle::leaf_hash(body.as_bytes());
            new_rows.extend([
                Val::int(seq),
                Val::text(&ev.id),
                Val::text(ev.action.as_str()),
                Val::text(&ev.occurred_at),
                Val::text(&ev.recorded_at),
                Val::text(ev.forge.kind.as_str()),
                Val::text(&ev.forge.instance),
                Val::int(ev.project.id),
                Val::opt_text(ev.project.path.as_deref()),
                Val::opt_int(ev.pipeline.as_ref().map(|p| p.id)),
                Val::opt_int(ev.job.as_ref().map(|j| j.id)),
                Val::opt_text(ev.actor.username.as_deref()),
                Val::opt_text(ev.pipeline.as_ref().and_then(|p| p.trigger.as_deref())),
                Val::opt_text(ev.pipeline.as_ref().and_then(|p| p.git_ref.as_deref())),
                Val::text(ev.evidence.source.as_str()),
            ]);
            new_bodies.push((seq, body));
            appended.insert(ev.id.clone());
            seq += 1;
            if tree {
                let mut node = (0u32, leaf);
                let mut idx = ev.seq;
                new_nodes.push((0, idx, leaf));
                while idx & 1 == 1 {
                    let (level, left) = frontier.pop().expect("an odd index has a left sibling");
                    debug_assert_eq!(level, node.0);
                    node = (level + 1, merkle::node_hash(&left, &node.1));
                    idx >>= 1;
                    new_nodes.push((node.0, idx, node.1));
                }
                frontier.push(node);
            }
            out[group].push((ev, leaf));
        }
    }
    insert_rows(db, &new_rows).await?;
    insert_bodies(db, &new_bodies).await?;
    insert_nodes(db, &new_nodes).await?;
    Ok(out)
}

const EVENT_COLUMNS: usize = 15;

/// The events' indexed rows, many to a statement (15 parameters a row; SQLite allows
/// 32766 a statement, PostgreSQL 65535).
async fn insert_rows<S: Sql>(db: &S, values: &[Val]) -> Result<()> {
    for chunk in values.chunks(EVENT_COLUMNS * 200) {
        let rows = crate::sql::value_rows(EVENT_COLUMNS, chunk.len() / EVENT_COLUMNS);
        db.exec(
            &format!(
                "INSERT INTO events (seq, id, action, occurred_at, recorded_at, forge, instance, project_id, project_path, pipeline_id, job_id, actor_username, trigger, ref, source) VALUES {rows}"
            ),
            chunk,
        )
        .await?;
    }
    Ok(())
}

async fn insert_bodies<S: Sql>(db: &S, bodies: &[(u64, String)]) -> Result<()> {
    for chunk in bodies.chunks(500) {
        let rows = crate::sql::value_rows(2, chunk.len());
        let params: Vec<Val> = chunk
            .iter()
            .flat_map(|(seq, body)| [Val::int(*seq), Val::text(body)])
            .collect();
        db.exec(&format!("INSERT INTO event_bodies (seq, body) VALUES {rows}"), &params)
            .await?;
    }
    Ok(())
}

/// The evidence source of each of `ids` that is stored (`""` for an event pruned before
/// sources were a column).
async fn stored_sources<S: Sql>(db: &S, ids: &[&str]) -> Result<std::collections::HashMap<String, String>> {
    let mut out = std::collections::HashMap::new();
    for chunk in ids.chunks(500) {
        let marks = crate::sql::marks(chunk.len());
        let params: Vec<Val> = chunk.iter().map(|id| Val::text(*id)).collect();
        let rows = db
            .query(&format!("SELECT id, source FROM events WHERE id IN ({marks})"), &params)
            .await?;
        for r in &rows {
            out.insert(text_at(r, 0).unwrap_or_default(), text_at(r, 1).unwrap_or_default());
        }
    }
    Ok(out)
}

async fn insert_nodes<S: Sql>(db: &S, nodes: &[(u32, u64, Hash)]) -> Result<()> {
    // 2 parameters a row; SQLite allows 32766 per statement.
    for chunk in nodes.chunks(1000) {
        let rows = crate::sql::value_rows(2, chunk.len());
        let params: Vec<Val> = chunk
            .iter()
            .flat_map(|(l, i, h)| [Val::Int(merkle::node_key((*l, *i))), Val::Blob(h.to_vec())])
            .collect();
        db.exec(&format!("INSERT INTO tree_nodes (id, hash) VALUES {rows}"), &params)
            .await?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub root: Hash,
    pub note: String,
    pub signed_at: String,
}

pub async fn latest_checkpoint<S: Sql>(db: &S) -> Result<Option<StoredCheckpoint>> {
    let rows = db
        .query(
            "SELECT size, root, note, signed_at FROM checkpoints ORDER BY size DESC LIMIT 1",
            &[],
        )
        .await?;
    Ok(rows.first().map(checkpoint_from))
}

pub async fn checkpoints<S: Sql>(db: &S) -> Result<Vec<StoredCheckpoint>> {
    let rows = db
        .query("SELECT size, root, note, signed_at FROM checkpoints ORDER BY size", &[])
        .await?;
    Ok(rows.iter().map(checkpoint_from).collect())
}

fn checkpoint_from(r: &Row) -> StoredCheckpoint {
    StoredCheckpoint {
        size: u64_at(r, 0).unwrap_or(0),
        root: r
            .get(1)
            .and_then(Val::as_blob)
            .and_then(|b| b.try_into().ok())
            .unwrap_or([0; 32]),
        note: text_at(r, 2).unwrap_or_default(),
        signed_at: text_at(r, 3).unwrap_or_default(),
    }
}

/// Signs a checkpoint of the current tree when it grew and the last one is at least
/// `interval_secs` old. Call inside the writer's transaction: the size is the primary key,
/// so two instances can never store two roots for one size.
pub async fn maybe_checkpoint<S: Sql>(
    db: &S,
    signer: &NoteSigner,
    now: &str,
    interval_secs: i64,
) -> Result<Option<StoredCheckpoint>> {
    // Whether one is due first: on most deliveries it is not, and that costs one read.
    let last = latest_checkpoint(db).await?;
    if let Some(l) = &last {
        let due = match (crate::time::parse(&l.signed_at), crate::time::parse(now)) {
            (Some(a), Some(b)) => (b - a).num_seconds() >= interval_secs,
            _ => true,
        };
        if !due {
            return Ok(None);
        }
    }
    let size = tree_size(db).await?;
    if last.as_ref().is_some_and(|l| l.size >= size) {
        return Ok(None);
    }
    let root = root_at(db, size).await?;
    let body = Checkpoint {
        origin: signer.name.clone(),
        size,
        root,
    }
    .body();
    let note = signer.sign(&body).map_err(|e| DbError::Other(e.to_string()))?;
    db.exec(
        "INSERT INTO checkpoints (size, root, note, signed_at) VALUES (?, ?, ?, ?)",
        &[
            Val::int(size),
            Val::Blob(root.to_vec()),
            Val::text(&note),
            Val::text(now),
        ],
    )
    .await?;
    Ok(Some(StoredCheckpoint {
        size,
        root,
        note,
        signed_at: now.into(),
    }))
}

/// The setting that keeps how many entries compaction has folded, so counting events is
/// one read, not a walk over every range (written by `compact::run`).
pub const COMPACTED_TOTAL: &str = "compact:entries";

/// Entries folded into compacted ranges (`verify` recounts them from the ranges). A ledger
/// compacted before the total was kept has ranges and no total: they are summed once, and
/// the next compaction run stores the sum.
pub async fn compacted_entries<S: Sql>(db: &S) -> Result<u64> {
    match super::setting(db, COMPACTED_TOTAL).await?.and_then(|v| v.parse().ok()) {
        Some(total) => Ok(total),
        None => Ok(compacted_ranges(db).await?.iter().map(|(_, level)| 1u64 << level).sum()),
    }
}

/// Every compacted range as (start, level), in order.
pub async fn compacted_ranges<S: Sql>(db: &S) -> Result<Vec<(u64, u32)>> {
    compacted_ranges_after(db, None, i64::MAX).await
}

/// Up to `limit` compacted ranges starting after `after`, in order: a page of them.
pub async fn compacted_ranges_after<S: Sql>(db: &S, after: Option<u64>, limit: i64) -> Result<Vec<(u64, u32)>> {
    let rows = db
        .query(
            "SELECT start, level FROM compacted WHERE start > ? ORDER BY start LIMIT ?",
            &[after.map_or(Val::Int(-1), Val::int), Val::Int(limit)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| (r[0].as_i64().unwrap_or(0) as u64, r[1].as_i64().unwrap_or(0) as u32))
        .collect())
}

/// The compacted range holding entry `seq`, as (start, end).
pub async fn compacted_range_containing<S: Sql>(db: &S, seq: u64) -> Result<Option<(u64, u64)>> {
    let rows = db
        .query(
            "SELECT start, level FROM compacted WHERE start <= ? ORDER BY start DESC LIMIT 1",
            &[Val::int(seq)],
        )
        .await?;
    Ok(rows.first().and_then(|r| {
        let start = r[0].as_i64()? as u64;
        let end = start + (1u64 << r[1].as_i64()?);
        (seq < end).then_some((start, end))
    }))
}
