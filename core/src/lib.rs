//! pipetrail's shared core: the event model, GitLab decoding, lifecycle normalization,
//! the ledger (canonical bytes, Merkle tree, signed checkpoints) and storage logic.
//! Everything here is plain Rust with no Spin or wasmtime types, so it is tested natively
//! and compiled into each component unchanged.

pub mod bundle;
pub mod canonical;
pub mod compact;
pub mod config;
pub mod encoding;
pub mod export;
pub mod findings;
pub mod generate;
pub mod gitlab_compat;
pub mod ingest;
pub mod merge;
pub mod merkle;
pub mod model;
#[cfg(feature = "native")]
pub mod native;
#[cfg(feature = "postgres")]
pub mod native_pg;
pub mod note;
pub mod params;
pub mod provenance;
pub mod reconcile;
pub mod retention;
pub mod routes;
pub mod sequencer;
pub mod sinks;
pub mod sources;
pub mod sql;
pub mod store;
pub mod time;
pub mod verify;
