//! GitLab Pipeline and Job Hooks: `parse` decodes a body into a snapshot, `facts` diffs the
//! snapshot against the projection into the events it proves.

pub mod facts;
mod parse;

pub use parse::*;
