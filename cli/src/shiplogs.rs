//! `pipetrail ship-logs`: a small log shipper for installs without Fluent Bit or Vector.
//! Follows GitLab's JSON log files and posts complete lines to `POST /ingest/gitlab-logs`.
//!
//! What it promises:
//! - an offset moves only after the app answered 2xx, and is saved (atomically) at once: a
//!   restart resumes where the last acknowledged batch ended, and a crash between the 2xx
//!   and the save re-sends lines the app already holds (it counts each line once, by hash);
//! - rotation (the file renamed, a new one created) is noticed by the inode: the rest of
//!   the old file is shipped first, found again after a restart by its inode in the same
//!   directory; truncation in place (copytruncate) restarts the file from its start, known
//!   by a shorter file or by a different first line (the file may have grown back past the
//!   old offset between two looks);
//! - a partial last line waits until its newline is written.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub struct Options {
    pub paths: Vec<PathBuf>,
    pub url: String,
    pub token: String,
    pub state: PathBuf,
    pub instance: Option<String>,
    pub batch_lines: usize,
    pub once: bool,
    pub interval: Duration,
}

#[derive(Clone, Default, PartialEq)]
struct Position {
    dev: u64,
    ino: u64,
    offset: u64,
    /// SHA-256 of the file's first line, once it has one: the file's identity across a
    /// truncation the size alone cannot show.
    head: Option<String>,
}

type State = BTreeMap<String, Position>;

fn load_state(path: &Path) -> anyhow::Result<State> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let v: Value = serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let mut state = State::new();
    for (file, p) in v["files"].as_object().into_iter().flatten() {
        state.insert(
            file.clone(),
            Position {
                dev: p["dev"].as_u64().unwrap_or(0),
                ino: p["ino"].as_u64().unwrap_or(0),
                offset: p["offset"].as_u64().unwrap_or(0),
                head: p["head"].as_str().map(str::to_string),
            },
        );
    }
    Ok(state)
}

fn save_state(path: &Path, state: &State) -> anyhow::Result<()> {
    let files: serde_json::Map<String, Value> = state
        .iter()
        .map(|(k, p)| {
            (
                k.clone(),
                json!({"dev": p.dev, "ino": p.ino, "offset": p.offset, "head": p.head}),
            )
        })
        .collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json!({"files": files}).to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    let mut state = load_state(&o.state)?;
    let mut shipped_total = 0usize;
    loop {
        for path in &o.paths {
            shipped_total += follow(o, path, &mut state)?;
        }
        if o.once {
            eprintln!("pipetrail: shipped {shipped_total} line(s)");
            return Ok(());
        }
        std::thread::sleep(o.interval);
    }
}

/// One pass over one followed path. Returns the lines shipped.
fn follow(o: &Options, path: &Path, state: &mut State) -> anyhow::Result<usize> {
    let key = path.display().to_string();
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(0);
    };
    let mut shipped = 0;
    let current = (meta.dev(), meta.ino());
    let head = first_line_hash(path);
    let pos = state.get(&key).cloned();
    match pos {
        Some(p) if (p.dev, p.ino) != current => {
            // Rotated: finish the old file wherever it went, then start the new one.
            if let Some(old) = find_by_inode(path, p.dev, p.ino) {
                shipped += ship_from(o, &old, p, &key, state, false)?;
            }
            let fresh = Position {
                dev: current.0,
                ino: current.1,
                offset: 0,
                head: head.clone(),
            };
            state.insert(key.clone(), fresh);
            save_state(&o.state, state)?;
        }
        Some(p) if meta.len() < p.offset || (p.head.is_some() && head.is_some() && p.head != head) => {
            // Truncated in place.
            state.insert(
                key.clone(),
                Position {
                    offset: 0,
                    head: head.clone(),
                    ..p
                },
            );
            save_state(&o.state, state)?;
        }
        None => {
            state.insert(
                key.clone(),
                Position {
                    dev: current.0,
                    ino: current.1,
                    offset: 0,
                    head: head.clone(),
                },
            );
        }
        Some(p) if p.head.is_none() && head.is_some() => {
            state.insert(
                key.clone(),
                Position {
                    head: head.clone(),
                    ..p
                },
            );
        }
        _ => {}
    }
    let p = state[&key].clone();
    shipped += ship_from(o, path, p, &key, state, true)?;
    Ok(shipped)
}

/// SHA-256 of the first line (at most 4 KiB), when the file has a complete one.
fn first_line_hash(path: &Path) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    let end = buf[..n].iter().position(|&b| b == b'\n')?;
    Some(pipetrail_core::encoding::hex(&pipetrail_core::encoding::sha256(
        &buf[..end],
    )))
}

/// A file in `path`'s directory with the given inode (where a rotated file went).
fn find_by_inode(path: &Path, dev: u64, ino: u64) -> Option<PathBuf> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.dev() == dev && m.ino() == ino))
}

/// Ships complete lines of `file` from `from.offset`, batch by batch, saving the position
/// under `key` after each acknowledged batch (when `track`; a rotated-away file's position
/// is replaced by the new file's once it is finished).
fn ship_from(
    o: &Options,
    file: &Path,
    from: Position,
    key: &str,
    state: &mut State,
    track: bool,
) -> anyhow::Result<usize> {
    let mut f = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    f.seek(SeekFrom::Start(from.offset))?;
    let mut rest = Vec::new();
    f.read_to_end(&mut rest)?;
    // Only complete lines; the tail after the last newline is still being written.
    let complete = rest.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut offset = from.offset;
    let mut shipped = 0;
    let mut lines = rest[..complete].split_inclusive(|&b| b == b'\n').peekable();
    while lines.peek().is_some() {
        let batch: Vec<&[u8]> = lines.by_ref().take(o.batch_lines.max(1)).collect();
        let bytes: usize = batch.iter().map(|l| l.len()).sum();
        let body: Vec<u8> = batch.concat();
        post(o, &body)?;
        offset += bytes as u64;
        shipped += batch.iter().filter(|l| !l.trim_ascii().is_empty()).count();
        if track {
            state.insert(key.to_string(), Position { offset, ..from.clone() });
            save_state(&o.state, state)?;
        }
    }
    Ok(shipped)
}

/// POSTs one batch, retrying with backoff (a 429/503's `Retry-After` when given) until it
/// is acknowledged; a 4xx other than 429 is a configuration error and stops the shipper.
fn post(o: &Options, body: &[u8]) -> anyhow::Result<()> {
    let mut endpoint = format!("{}/ingest/gitlab-logs", o.url.trim_end_matches('/'));
    if let Some(i) = &o.instance {
        endpoint.push_str(&format!("?instance={}", pipetrail_core::encoding::url_encode(i)));
    }
    let mut delay = Duration::from_secs(1);
    for attempt in 1.. {
        let res = ureq::post(&endpoint)
            .header("Authorization", &format!("Bearer {}", o.token))
            .header("Content-Type", "application/x-ndjson")
            .config()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .send(body);
        let wait = match res {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(mut r) => {
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let text = r.body_mut().read_to_string().unwrap_or_default();
                if (400..500).contains(&status) && status != 429 {
                    bail!("{endpoint} answered {status}: {}", text.trim());
                }
                eprintln!("pipetrail: {endpoint} answered {status}; retrying");
                retry_after.map(Duration::from_secs)
            }
            Err(e) => {
                eprintln!("pipetrail: POST {endpoint}: {e}; retrying");
                None
            }
        };
        if o.once && attempt >= 5 {
            bail!("{endpoint}: giving up after {attempt} attempts");
        }
        std::thread::sleep(wait.unwrap_or(delay));
        delay = (delay * 2).min(Duration::from_secs(60));
    }
    unreachable!("the loop returns or bails")
}
