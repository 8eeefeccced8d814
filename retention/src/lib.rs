//! The `retention` component: scheduled work. Spin's cron trigger is a plugin the test host
//! cannot load, so the same work is also an authenticated HTTP route any scheduler can
//! call: `POST /admin/tick` signs a checkpoint when one is due.

use http::{Method, Response, StatusCode};
use pipetrail_core::store;
use pipetrail_platform::{self as platform, Caller, Db, Request, error, json};
use serde_json::json;
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> Response<String> {
    if req.uri().path() != "/admin/tick" {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {}", req.uri().path()),
        );
    }
    if req.method() != Method::POST {
        return error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use POST");
    }
    let db = match Db::open().await {
        Ok(db) => db,
        Err(e) => return platform::db_failure(&e),
    };
    match platform::authenticate(&db, req.headers()).await {
        Ok(Caller::Admin) => {}
        Ok(_) => return error(StatusCode::FORBIDDEN, "forbidden", "the admin token is required"),
        Err(r) => return r,
    }
    let result = async {
        let (signer, _) = platform::signer(&db).await?;
        db_exec(&db, "BEGIN IMMEDIATE").await?;
        let signed = store::maybe_checkpoint(&db, &signer, &platform::now(), 0).await;
        store::finish(&db, signed).await
    }
    .await;
    match result {
        Ok(Some(cp)) => json(
            StatusCode::OK,
            &json!({"checkpoint": {"size": cp.size, "signed_at": cp.signed_at}}),
        ),
        Ok(None) => json(
            StatusCode::OK,
            &json!({"checkpoint": null, "reason": "the tree has not grown since the last checkpoint"}),
        ),
        Err(e) => platform::db_failure(&e),
    }
}

async fn db_exec(db: &Db, sql: &str) -> Result<(), pipetrail_core::sql::DbError> {
    use pipetrail_core::sql::Sql;
    db.exec(sql, &[]).await
}
