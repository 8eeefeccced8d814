//! The benchmarks' floor: the cheapest component the host can run (a fresh instance per
//! request, the request body read, 200 answered), against which ingest is compared.

use spin_sdk::http::Request;
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> http::Response<String> {
    use http_body_util::BodyExt as _;
    // Reads the body as ingest must, so the floor includes receiving the delivery.
    let bytes = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    http::Response::builder()
        .status(200)
        .body(format!("{{\"received\":{bytes}}}"))
        .unwrap_or_default()
}
