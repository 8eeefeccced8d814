//! Storage, one file a table family: `schema` (both databases' migrations), `ledger`
//! (append, tree nodes, checkpoints, compacted ranges), `projection`, `deliveries`,
//! `settings`, `tokens`, `inbox` (accepted, not yet integrated) and `events` (the reads). Every function takes an [`Sql`] and runs
//! inside whatever transaction the caller holds; writers hold [`crate::sql::in_writer`]'s.
//!
//! This module's exports are the storage API: callers use `store::append`, never a file's
//! path, so a family can move between files without touching them.

mod deliveries;
mod events;
mod inbox;
mod ledger;
mod projection;
mod schema;
mod settings;
mod tokens;

pub use deliveries::{
    DeliveryRecord, count_outcome, count_outcomes, deliveries_seen, insert_deliveries, outcome_counts,
};
pub use events::{
    EventFilter, StoredEvent, count_events, count_events_up_to, event_by_seq, list_events, seq_of_event_id,
};
pub use inbox::{Fate, Queued, backlog, dequeue, enqueue, enqueue_all, fate, queued, set_aside, waiting};
pub use ledger::{
    COMPACTED_TOTAL, StoredCheckpoint, append, append_batch, append_without_tree, checkpoints, compacted_entries,
    compacted_range_containing, compacted_ranges, compacted_ranges_after, latest_checkpoint, maybe_checkpoint, nodes,
    range_hashes, root_at, tree_size,
};
pub use projection::{job_home, load_projection, load_projections, pipeline_home, run_home, save_projection};
pub use schema::{ensure_partitions, migrate, schema_version};
pub use settings::{put_setting, setting, setting_or_insert};
pub use tokens::{TokenRecord, find_token, insert_token, scope_covers, token_hash};

use crate::sql::{DbError, Row, Val};

type Result<T> = std::result::Result<T, DbError>;

fn first_int(rows: &[Row]) -> Option<i64> {
    rows.first().and_then(|r| r.first()).and_then(Val::as_i64)
}

fn text_at(row: &Row, i: usize) -> Option<String> {
    row.get(i).and_then(Val::as_str).map(str::to_string)
}

fn u64_at(row: &Row, i: usize) -> Option<u64> {
    row.get(i).and_then(Val::as_i64).map(|v| v as u64)
}
