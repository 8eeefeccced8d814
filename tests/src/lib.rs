//! pipetrail's test host: runs the real `.wasm` components under wasmtime with the Spin
//! interfaces they import (HTTP in and out, SQLite, PostgreSQL, Redis, MQTT, variables), from the WIT files spin-sdk
//! ships. A test harness faithful to Spin's documented behaviour, not a product.

pub mod allowed_hosts;
pub mod fake_github;
pub mod fake_gitlab;
pub mod fake_http;
pub mod harness;
pub mod host;
pub mod manifest;
pub mod outbound;
pub mod pg;
pub mod spin;

pub use host::{Host, Options, serve};
