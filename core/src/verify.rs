//! Offline verification of a ledger: recompute every leaf from the stored canonical body,
//! rebuild the tree, check every checkpoint's signature and root, and name the first bad
//! entry exactly. Reads in seq-ordered chunks, so memory stays O(chunk + log n).

use crate::encoding::base64_encode;
use crate::merkle::{self, Frontier, Hash};
use crate::note::{Checkpoint, NoteVerifier};
use crate::sql::{DbError, Sql, Val};

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Ok {
        size: u64,
        root: Hash,
        checkpoints: usize,
        pruned: u64,
        /// Entries folded into compacted ranges (core/src/compact.rs).
        compacted: u64,
    },
    Tampered {
        /// The first entry that is wrong, when one entry can be named.
        seq: Option<u64>,
        /// edited | missing | reordered | inserted | rolled_back | bad_signature | fork | root_mismatch
        kind: &'static str,
        detail: String,
    },
}

impl Verdict {
    pub fn line(&self) -> String {
        match self {
            Verdict::Ok {
                size,
                root,
                checkpoints,
                pruned,
                compacted,
            } => format!(
                "OK: {size} entries ({pruned} pruned, {compacted} compacted), root {} at size {size}, {checkpoints} checkpoint(s) verified",
                base64_encode(root)
            ),
            Verdict::Tampered {
                seq: Some(s),
                kind,
                detail,
            } => format!("TAMPERED: first bad seq {s}: {kind}: {detail}"),
            Verdict::Tampered {
                seq: None,
                kind,
                detail,
            } => format!("TAMPERED: {kind}: {detail}"),
        }
    }
}

fn tampered(seq: Option<u64>, kind: &'static str, detail: impl Into<String>) -> Verdict {
    Verdict::Tampered {
        seq,
        kind,
        detail: detail.into(),
    }
}

const CHUNK: i64 = 5000;

struct Row {
    seq: u64,
    body: Option<String>,
}

/// Verifies the SQLite ledger behind `db` against `key`. `external` is a signed checkpoint
/// kept elsewhere (a witness, another volume): it catches a rollback of the whole database.
pub async fn verify_db<S: Sql>(db: &S, key: &NoteVerifier, external: Option<&str>) -> Result<Verdict, DbError> {
    // 1. Checkpoints: each must be signed by the key and agree with its stored root.
    let mut checkpoints = Vec::new();
    for cp in crate::store::checkpoints(db).await? {
        let parsed = match key.open(&cp.note).map(Checkpoint::parse) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) | Err(e) => {
                return Ok(tampered(
                    None,
                    "bad_signature",
                    format!("checkpoint at size {}: {e}", cp.size),
                ));
            }
        };
        if parsed.size != cp.size || parsed.root != cp.root || parsed.origin != key.name {
            return Ok(tampered(
                None,
                "bad_signature",
                format!(
                    "checkpoint at size {}: stored size/root/origin differ from the signed note",
                    cp.size
                ),
            ));
        }
        checkpoints.push(parsed);
    }
    if let Some(text) = external {
        let parsed = match key.open(text).map(Checkpoint::parse) {
            Ok(Ok(c)) => c,
            Ok(Err(e)) | Err(e) => return Ok(tampered(None, "bad_signature", format!("external checkpoint: {e}"))),
        };
        checkpoints.push(parsed);
    }
    checkpoints.sort_by_key(|c| c.size);

    // 2. Leaves and bodies, in seq order; a compacted range counts as its subtree hash.
    let leaf_count = crate::store::tree_size(db).await?;
    let mut ranges = Ranges::default();
    let mut frontier = Frontier::default();
    let (mut pruned, mut compacted) = (0u64, 0u64);
    let mut next_cp = 0usize;
    let mut expected = 0u64;
    // Checks every checkpoint the frontier has reached. One strictly inside a compacted
    // range cannot be recomputed; compaction deletes those, so none is skipped in practice.
    let check_checkpoints = |frontier: &Frontier, next_cp: &mut usize| -> Option<Verdict> {
        while *next_cp < checkpoints.len() && checkpoints[*next_cp].size <= frontier.size() {
            if checkpoints[*next_cp].size == frontier.size() && checkpoints[*next_cp].root != frontier.root() {
                let prev = if *next_cp == 0 {
                    0
                } else {
                    checkpoints[*next_cp - 1].size
                };
                return Some(tampered(
                    Some(prev),
                    "root_mismatch",
                    format!(
                        "entries {prev}..{} hash to a different root than the checkpoint at size {} signed: rewritten consistently (bodies and leaves) somewhere in that range",
                        frontier.size() - 1,
                        frontier.size()
                    ),
                ));
            }
            *next_cp += 1;
        }
        None
    };
    loop {
        // Compacted ranges starting here, before any row.
        while let Some((start, level)) = ranges.peek(db).await? {
            if start != expected {
                break;
            }
            ranges.next();
            let node = (level, start >> level);
            let stored = db
                .query(
                    "SELECT hash FROM tree_nodes WHERE id = ?",
                    &[Val::Int(merkle::node_key(node))],
                )
                .await?;
            let Some(hash) = stored
                .first()
                .and_then(|r| r[0].as_blob())
                .and_then(|b| <Hash>::try_from(b).ok())
            else {
                return Ok(tampered(
                    Some(start),
                    "missing",
                    format!(
                        "compacted range {start}..{} has no subtree hash",
                        start + (1u64 << level)
                    ),
                ));
            };
            let end = start + (1 << level);
            let rows_inside = db
                .query(
                    "SELECT seq FROM events WHERE seq >= ? AND seq < ? LIMIT 1",
                    &[Val::int(start), Val::int(end)],
                )
                .await?;
            if let Some(seq) = rows_inside.first().and_then(|r| r[0].as_i64()) {
                return Ok(tampered(
                    Some(seq as u64),
                    "inserted",
                    format!("an event row at seq {seq} lies in compacted range {start}..{end}"),
                ));
            }
            if !frontier.push_subtree(level, hash) {
                return Ok(tampered(
                    Some(start),
                    "edited",
                    format!("compacted range at {start} of 2^{level} entries is not aligned"),
                ));
            }
            compacted += 1 << level;
            expected += 1 << level;
            if let Some(v) = check_checkpoints(&frontier, &mut next_cp) {
                return Ok(v);
            }
        }
        // Rows up to the next compacted range only: with ranges between most entries (a
        // policy keeping one action in four), reading a full chunk per range was quadratic.
        let upper = ranges.peek(db).await?.map_or(i64::MAX, |(start, _)| start as i64);
        let rows: Vec<Row> = db
            .query(
                "SELECT e.seq, b.body FROM events e LEFT JOIN event_bodies b ON b.seq = e.seq WHERE e.seq >= ? AND e.seq < ? ORDER BY e.seq LIMIT ?",
                &[Val::int(expected), Val::Int(upper), Val::Int(CHUNK)],
            )
            .await?
            .into_iter()
            .map(|r| Row {
                seq: r[0].as_i64().unwrap_or(-1) as u64,
                body: r[1].as_str().map(str::to_string),
            })
            .collect();
        let Some(last) = rows.last().map(|r| r.seq) else {
            match ranges.peek(db).await? {
                // Nothing stored before the next range, and it does not start here.
                Some((start, _)) => return Ok(gap_or_overlap(expected, start)),
                None => break,
            }
        };
        let leaves = leaf_range(db, expected as i64, last as i64 + 1).await?;
        let next_rows = db
            .query("SELECT body FROM event_bodies WHERE seq = ?", &[Val::int(last + 1)])
            .await?;
        let following_body = next_rows.first().and_then(|r| r[0].as_str().map(str::to_string));
        for (i, row) in rows.iter().enumerate() {
            if row.seq != expected {
                return Ok(tampered(
                    Some(expected),
                    "missing",
                    format!("no event row with seq {expected}"),
                ));
            }
            let Some(stored_leaf) = leaves.get(&row.seq) else {
                return Ok(tampered(Some(row.seq), "inserted", "the row has no leaf in the tree"));
            };
            let leaf = match &row.body {
                Some(body) => {
                    let leaf = merkle::leaf_hash(body.as_bytes());
                    if &leaf != stored_leaf {
                        let claimed = body_seq(body);
                        let next_body = rows.get(i + 1).and_then(|r| r.body.clone()).or(following_body.clone());
                        let kind = classify(row.seq, claimed, &leaf, &leaves, next_body.as_deref());
                        return Ok(tampered(Some(row.seq), kind.0, kind.1));
                    }
                    if body_seq(body) != Some(row.seq) {
                        return Ok(tampered(
                            Some(row.seq),
                            "edited",
                            "the body's seq differs from its position",
                        ));
                    }
                    leaf
                }
                None => {
                    let tomb = db
                        .query("SELECT 1 FROM pruned WHERE seq = ?", &[Val::int(row.seq)])
                        .await?;
                    if tomb.is_empty() {
                        return Ok(tampered(
                            Some(row.seq),
                            "edited",
                            "the body was removed without a retention tombstone",
                        ));
                    }
                    pruned += 1;
                    *stored_leaf
                }
            };
            frontier.push(leaf);
            expected += 1;
            if let Some(v) = check_checkpoints(&frontier, &mut next_cp) {
                return Ok(v);
            }
        }
    }
    if expected < leaf_count {
        return Ok(tampered(
            Some(expected),
            "missing",
            format!("the tree has {leaf_count} leaves but events stop at seq {expected}"),
        ));
    }
    if let Some(cp) = checkpoints.get(next_cp) {
        return Ok(tampered(
            Some(frontier.size()),
            "rolled_back",
            format!(
                "a checkpoint signed size {} but the log holds {} entries",
                cp.size,
                frontier.size()
            ),
        ));
    }
    Ok(Verdict::Ok {
        size: frontier.size(),
        root: frontier.root(),
        checkpoints: checkpoints.len(),
        pruned,
        compacted,
    })
}

/// The compacted ranges in order, read a page at a time so memory stays bounded however
/// many there are (a policy keeping one action in four leaves a range between most rows).
#[derive(Default)]
struct Ranges {
    page: std::collections::VecDeque<(u64, u32)>,
    after: Option<u64>,
    done: bool,
}

impl Ranges {
    async fn peek<S: Sql>(&mut self, db: &S) -> Result<Option<(u64, u32)>, DbError> {
        if self.page.is_empty() && !self.done {
            let page = crate::store::compacted_ranges_after(db, self.after, CHUNK).await?;
            self.done = page.len() < CHUNK as usize;
            self.after = page.last().map(|r| r.0).or(self.after);
            self.page.extend(page);
        }
        Ok(self.page.front().copied())
    }

    fn next(&mut self) {
        self.page.pop_front();
    }
}

/// A compacted range that does not start where the stored entries end.
fn gap_or_overlap(expected: u64, start: u64) -> Verdict {
    if start > expected {
        tampered(
            Some(expected),
            "missing",
            format!("entries {expected}..{start} are neither stored nor compacted"),
        )
    } else {
        tampered(
            Some(start),
            "inserted",
            format!("a compacted range starts at {start}, among entries that are still stored"),
        )
    }
}

async fn leaf_range<S: Sql>(db: &S, start: i64, end: i64) -> Result<std::collections::HashMap<u64, Hash>, DbError> {
    let rows = db
        .query(
            "SELECT id, hash FROM tree_nodes WHERE id >= ? AND id < ? AND id % 64 = 0",
            &[
                Val::Int(merkle::leaf_key(start as u64)),
                Val::Int(merkle::leaf_key(end as u64)),
            ],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some(((r[0].as_i64()? >> 6) as u64, <Hash>::try_from(r[1].as_blob()?).ok()?)))
        .collect())
}

/// The `seq` a canonical body claims. In RFC 8785 output a `"seq":` with unescaped quotes
/// can only be an object key (quotes inside strings are escaped), and only the top-level
/// object of an event has that key, so a scan finds it without parsing the whole body.
fn body_seq(body: &str) -> Option<u64> {
    let at = body.find("\"seq\":")? + 6;
    let digits = body[at..].bytes().take_while(u8::is_ascii_digit).count();
    body.get(at..at + digits)?.parse().ok()
}

/// Names what happened at `seq`, whose body does not hash to its leaf.
fn classify(
    seq: u64,
    claimed: Option<u64>,
    leaf: &Hash,
    leaves: &std::collections::HashMap<u64, Hash>,
    next_body: Option<&str>,
) -> (&'static str, String) {
    match claimed {
        Some(c) if c != seq && leaves.get(&c) == Some(leaf) => {
            ("reordered", format!("the row at seq {seq} holds entry {c}"))
        }
        Some(c) if c != seq => ("reordered", format!("the row at seq {seq} claims seq {c}")),
        _ if next_body.and_then(body_seq) == Some(seq) => (
            "inserted",
            format!("a row was inserted at seq {seq}; the original entry {seq} follows it"),
        ),
        _ => ("edited", "the body does not hash to its leaf".into()),
    }
}
