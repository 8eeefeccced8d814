//! Settings: the app's own key-value state (signing key, cursors, counters).

use super::{Result, text_at};
use crate::sql::{Sql, Val};

pub async fn setting<S: Sql>(db: &S, key: &str) -> Result<Option<String>> {
    let rows = db
        .query("SELECT value FROM settings WHERE key = ?", &[Val::text(key)])
        .await?;
    Ok(rows.first().and_then(|r| text_at(r, 0)))
}

pub async fn put_setting<S: Sql>(db: &S, key: &str, value: &str) -> Result<()> {
    db.exec(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        &[Val::text(key), Val::text(value)],
    )
    .await
}

/// Stores `value` unless the key is already set; returns what is stored either way, so
/// concurrent first starts agree on one value.
pub async fn setting_or_insert<S: Sql>(db: &S, key: &str, value: &str) -> Result<String> {
    db.exec(
        "INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
        &[Val::text(key), Val::text(value)],
    )
    .await?;
    Ok(setting(db, key).await?.unwrap_or_else(|| value.into()))
}
