//! Export bundles: events with their inclusion proofs and the signed checkpoint they prove
//! against, so an auditor can check them with the verifier key alone (no database).
//!
//! ```json
//! {"format": "pipetrail-bundle/1", "checkpoint": "<signed note>", "tree_size": N,
//!  "events": [{"event": {...}, "leaf_hash": "<b64>", "proof": ["<b64>", ...]}], "next_cursor": ...}
//! ```

use serde_json::{Value, json};

use crate::encoding::{base64_decode, base64_encode};
use crate::merkle::{self, Hash};
use crate::note::{Checkpoint, NoteVerifier};

pub const FORMAT: &str = "pipetrail-bundle/1";

/// Largest number of events in one bundle; more are reached with `cursor`.
pub const MAX_EVENTS: usize = 10_000;

pub fn entry(event: &Value, leaf: &Hash, proof: &[Hash]) -> Value {
    json!({
        "event": event,
        "leaf_hash": base64_encode(leaf),
        "proof": proof.iter().map(|h| base64_encode(h)).collect::<Vec<_>>(),
    })
}

#[derive(Debug, Clone, PartialEq)]
pub enum BundleVerdict {
    Ok {
        events: usize,
        tree_size: u64,
        origin: String,
    },
    Tampered {
        seq: Option<u64>,
        detail: String,
    },
    Unreadable(String),
}

impl BundleVerdict {
    pub fn line(&self) -> String {
        match self {
            BundleVerdict::Ok {
                events,
                tree_size,
                origin,
            } => {
                format!("OK: {events} event(s) proven included in {origin} at size {tree_size}")
            }
            BundleVerdict::Tampered { seq: Some(s), detail } => format!("TAMPERED: first bad seq {s}: {detail}"),
            BundleVerdict::Tampered { seq: None, detail } => format!("TAMPERED: {detail}"),
            BundleVerdict::Unreadable(m) => format!("UNREADABLE: {m}"),
        }
    }
}

fn hash(v: &Value) -> Option<Hash> {
    base64_decode(v.as_str()?)?.try_into().ok()
}

/// Checks a bundle: the checkpoint's signature, and for every event that its canonical
/// bytes hash to its leaf and that its proof leads to the signed root.
pub fn verify(text: &str, key: &NoteVerifier) -> BundleVerdict {
    let bad = |m: &str| BundleVerdict::Unreadable(m.to_string());
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return bad("not JSON");
    };
    if v["format"] != FORMAT {
        return bad("not a pipetrail-bundle/1");
    }
    let Some(note) = v["checkpoint"].as_str() else {
        return bad("no checkpoint");
    };
    let cp = match key.open(note).map(Checkpoint::parse) {
        Ok(Ok(cp)) => cp,
        Ok(Err(e)) | Err(e) => {
            return BundleVerdict::Tampered {
                seq: None,
                detail: format!("checkpoint: {e}"),
            };
        }
    };
    let Some(events) = v["events"].as_array() else {
        return bad("no events array");
    };
    for e in events {
        let (Some(seq), Some(leaf), Some(proof)) = (
            e["event"]["seq"].as_u64(),
            hash(&e["leaf_hash"]),
            e["proof"]
                .as_array()
                .and_then(|p| p.iter().map(hash).collect::<Option<Vec<Hash>>>()),
        ) else {
            return bad("an entry lacks event.seq, leaf_hash or proof");
        };
        if merkle::leaf_hash(&crate::canonical::to_vec(&e["event"])) != leaf {
            return BundleVerdict::Tampered {
                seq: Some(seq),
                detail: "edited: the event does not hash to its leaf".into(),
            };
        }
        if let Err(err) = merkle::verify_inclusion(seq, cp.size, &leaf, &proof, &cp.root) {
            return BundleVerdict::Tampered {
                seq: Some(seq),
                detail: format!("not in the signed tree: {err}"),
            };
        }
    }
    BundleVerdict::Ok {
        events: events.len(),
        tree_size: cp.size,
        origin: cp.origin,
    }
}
