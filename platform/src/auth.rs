//! Who may call a route, decided in one place from its row in `core::routes::ROUTES`: each
//! component calls `admit` before any handler runs (and `admit_body` once the body is read,
//! for a route signed over its body). Handlers never check credentials themselves.

use http::{HeaderMap, Response, StatusCode};
use pipetrail_core::encoding::ct_eq;
use pipetrail_core::routes::Auth;

use crate::{Caller, Db, authenticate, error, header, var_list};

/// Admits a request to a route, or the answer to send instead (401, or 403 for a token
/// that is not the admin's on an admin route). A `BodySignature` route is admitted
/// provisionally here and decided by `admit_body`.
pub async fn admit(db: &Db, auth: Auth, headers: &HeaderMap) -> Result<Caller, Response<String>> {
    match auth {
        Auth::None => Ok(Caller::Anyone),
        Auth::Secret { header: name, variable } => {
            let given = header(headers, name).unwrap_or("");
            let given = if name.eq_ignore_ascii_case("authorization") {
                // Bearer, or Splunk for a Splunk HTTP Event Collector's clients.
                given
                    .strip_prefix("Bearer ")
                    .or_else(|| given.strip_prefix("Splunk "))
                    .unwrap_or(given)
                    .trim()
            } else {
                given
            };
            if shared_secret_valid(&var_list(variable).await, given) {
                Ok(Caller::Source)
            } else {
                Err(error(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    format!("missing or wrong {name}"),
                ))
            }
        }
        Auth::BodySignature { .. } => Ok(Caller::Source),
        Auth::Token => authenticate(db, headers).await,
        Auth::Admin => match authenticate(db, headers).await? {
            Caller::Admin => Ok(Caller::Admin),
            _ => Err(error(StatusCode::FORBIDDEN, "forbidden", "the admin token is required")),
        },
    }
}

/// For a route signed over its body (GitHub's `X-Hub-Signature-256: sha256=<hex>`): the
/// signature under one of the variable's secrets, checked before anything is decoded.
/// Every other route was decided by `admit`.
pub async fn admit_body(auth: Auth, headers: &HeaderMap, body: &[u8]) -> Result<(), Response<String>> {
    let Auth::BodySignature { header: name, variable } = auth else {
        return Ok(());
    };
    let secrets = var_list(variable).await;
    if pipetrail_core::sources::github::signature_valid(&secrets, body, header(headers, name)) {
        Ok(())
    } else {
        Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("missing or wrong {name}"),
        ))
    }
}

/// Whether `given` is one of `secrets`. Every secret is compared in full, so timing does not
/// say which one nearly matched; no secret configured admits nobody.
fn shared_secret_valid(secrets: &[String], given: &str) -> bool {
    let ok = secrets
        .iter()
        .fold(false, |acc, s| ct_eq(s.as_bytes(), given.as_bytes()) | acc);
    ok && !secrets.is_empty()
}
