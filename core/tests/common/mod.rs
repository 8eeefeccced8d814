//! Shared helpers for core's integration tests: fixtures, a fresh store, one-call ingest.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pipetrail_core::ingest::{self, Delivery, IngestError, Outcome, Settings};
use pipetrail_core::native::NativeDb;
use pipetrail_core::note::NoteSigner;
use pipetrail_core::sources::facts::VariablePolicy;
use pipetrail_core::sql::block_on;
use pipetrail_core::store::{self, EventFilter};
use serde_json::Value;

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/gitlab")
        .join(name)
}

pub fn fixture(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture_path(name)).unwrap()).unwrap()
}

pub fn signer() -> NoteSigner {
    NoteSigner::from_seed("test.example/log", [42u8; 32]).unwrap()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("pipetrail-{name}-{}-{}", std::process::id(), nanos()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub fn fresh_db(dir: &Path) -> NativeDb {
    let db = NativeDb::open(&dir.join("sqlite_db.db")).unwrap();
    block_on(store::migrate(&db)).unwrap();
    db
}

pub struct Ingest<'a> {
    pub db: &'a NativeDb,
    pub policy: VariablePolicy,
    pub signer: NoteSigner,
    pub interval: i64,
}

impl<'a> Ingest<'a> {
    pub fn new(db: &'a NativeDb) -> Self {
        Ingest {
            db,
            policy: VariablePolicy::default(),
            signer: signer(),
            interval: 0,
        }
    }

    /// Records `body` as a delivery with `uuid` (or no delivery id).
    pub fn send(&self, body: &Value, event: &str, uuid: Option<&str>, at: &str) -> Result<Outcome, IngestError> {
        let bytes = serde_json::to_vec(body).unwrap();
        self.send_bytes(&bytes, event, uuid, at)
    }

    pub fn send_bytes(&self, bytes: &[u8], event: &str, uuid: Option<&str>, at: &str) -> Result<Outcome, IngestError> {
        let d = Delivery {
            body: bytes,
            event_header: Some(event),
            idempotency_key: None,
            event_uuid: uuid,
            received_at: at,
        };
        let s = Settings {
            variables: &self.policy,
            signer: &self.signer,
            checkpoint_interval_secs: self.interval,
            findings: pipetrail_core::findings::Rules::default(),
            without_tree: false,
        };
        block_on(ingest::record_gitlab(self.db, &d, &s))
    }
}

/// Every stored event body, oldest first.
pub fn all_events(db: &NativeDb) -> Vec<Value> {
    block_on(store::list_events(db, &EventFilter::default(), 100_000))
        .unwrap()
        .into_iter()
        .map(|e| e.event.unwrap().to_json())
        .collect()
}

pub fn actions(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

/// Everything a delivery may change, as text: a bad delivery must leave it identical.
pub fn snapshot(db: &NativeDb) -> String {
    pipetrail_core::native::dump_tables(db).unwrap()
}
