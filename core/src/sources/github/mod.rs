//! GitHub Actions webhooks (`workflow_run`, `workflow_job`): `parse` checks the signature
//! and decodes a body, `facts` diffs a run or job against the projection.

pub mod facts;
mod parse;

pub use parse::*;
