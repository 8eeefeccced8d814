//! API tokens (stored as their SHA-256 only) and their project scopes.

use super::{Result, text_at};
use crate::encoding::sha256;
use crate::sql::{Sql, Val};

#[derive(Debug, Clone, PartialEq)]
pub struct TokenRecord {
    pub name: String,
    pub scope: String,
    /// Project ids or paths; empty means every project.
    pub projects: Vec<String>,
}

pub fn token_hash(token: &str) -> String {
    crate::encoding::hex(&sha256(token.as_bytes()))
}

pub async fn insert_token<S: Sql>(db: &S, token: &str, rec: &TokenRecord, now: &str) -> Result<()> {
    db.exec(
        "INSERT INTO tokens (hash, name, scope, projects, created_at) VALUES (?, ?, ?, ?, ?)",
        &[
            Val::text(token_hash(token)),
            Val::text(&rec.name),
            Val::text(&rec.scope),
            Val::text(serde_json::to_string(&rec.projects).expect("strings serialize")),
            Val::text(now),
        ],
    )
    .await
}

pub async fn find_token<S: Sql>(db: &S, token: &str) -> Result<Option<TokenRecord>> {
    // Tokens are 256-bit random: looking one up by its SHA-256 reveals nothing useful
    // through timing, and the hash is all that is stored.
    let rows = db
        .query(
            "SELECT name, scope, projects FROM tokens WHERE hash = ?",
            &[Val::text(token_hash(token))],
        )
        .await?;
    Ok(rows.first().map(|r| TokenRecord {
        name: text_at(r, 0).unwrap_or_default(),
        scope: text_at(r, 1).unwrap_or_default(),
        projects: text_at(r, 2)
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default(),
    }))
}

/// A token's scope entry as (forge, project id or path): `github:<repo>` is a GitHub
/// repository, anything else a GitLab project.
pub(crate) fn scope_entry(entry: &str) -> (&'static str, &str) {
    match entry.strip_prefix("github:") {
        Some(repo) => ("github", repo),
        None => ("gitlab", entry),
    }
}

/// Whether a token scoped to `scope` may see event `ev` (an API event object): the rule
/// `filter_sql` applies in SQL, for code that holds one event.
pub fn scope_covers(scope: &[String], ev: &crate::model::Event) -> bool {
    let id = ev.project.id.to_string();
    let path = ev.project.path.as_deref();
    scope.iter().any(|entry| {
        let (f, p) = scope_entry(entry);
        f == ev.forge.kind.as_str() && (id == p || path == Some(p))
    })
}
