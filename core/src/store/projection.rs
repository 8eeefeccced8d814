//! The projection: each pipeline's and job's last known state, what the differ of every
//! source compares a new snapshot with. Derived from the ledger; never evidence itself.

use super::{Result, text_at, u64_at};
use crate::sources::facts::{JobState, PipelineState, Projection};
use crate::sql::{Sql, Val};

pub async fn load_projection<S: Sql>(db: &S, instance: &str, pipeline_id: u64) -> Result<Projection> {
    let mut one = load_projections(db, &[(instance, pipeline_id)]).await?;
    Ok(one.remove(&(instance.to_string(), pipeline_id)).unwrap_or_default())
}

/// The projections of many pipelines in two statements (a batch's), keyed by (instance,
/// pipeline id); a pipeline the store has not seen is absent.
pub async fn load_projections<S: Sql>(
    db: &S,
    pipelines: &[(&str, u64)],
) -> Result<std::collections::HashMap<(String, u64), Projection>> {
    let mut out: std::collections::HashMap<(String, u64), Projection> = std::collections::HashMap::new();
    for chunk in pipelines.chunks(400) {
        // PostgreSQL types a bare parameter in VALUES as text: the id is cast to compare.
        let values = vec!["(?, CAST(? AS BIGINT))"; chunk.len()].join(", ");
        let params: Vec<Val> = chunk
            .iter()
            .flat_map(|(instance, id)| [Val::text(*instance), Val::int(*id)])
            .collect();
        let rows = db
            .query(
                &format!(
                    "SELECT instance, pipeline_id, project_id, project_path, status, attempt, iid, ref, sha, source, trigger FROM pipelines WHERE (instance, pipeline_id) IN (VALUES {values})"
                ),
                &params,
            )
            .await?;
        for r in &rows {
            let key = (text_at(r, 0).unwrap_or_default(), u64_at(r, 1).unwrap_or(0));
            out.entry(key).or_default().pipeline = Some(PipelineState {
                project_id: u64_at(r, 2).unwrap_or(0),
                project_path: text_at(r, 3),
                status: text_at(r, 4),
                attempt: u64_at(r, 5).unwrap_or(0) as u32,
                iid: u64_at(r, 6),
                git_ref: text_at(r, 7),
                sha: text_at(r, 8),
                source: text_at(r, 9),
                trigger: text_at(r, 10),
            });
        }
        let rows = db
            .query(
                &format!(
                    "SELECT instance, pipeline_id, job_id, status, name, retried FROM jobs WHERE (instance, pipeline_id) IN (VALUES {values})"
                ),
                &params,
            )
            .await?;
        for r in &rows {
            let key = (text_at(r, 0).unwrap_or_default(), u64_at(r, 1).unwrap_or(0));
            out.entry(key).or_default().jobs.insert(
                u64_at(r, 2).unwrap_or(0),
                JobState {
                    status: text_at(r, 3).unwrap_or_default(),
                    name: text_at(r, 4),
                    retried: r.get(5).and_then(Val::as_i64) == Some(1),
                },
            );
        }
    }
    Ok(out)
}

/// Where GitLab pipeline `id` lives (instance, project id, path), when exactly one instance
/// holds it.
pub async fn pipeline_home<S: Sql>(db: &S, id: u64) -> Result<Option<crate::sources::PipelineHome>> {
    home_on(db, crate::model::ForgeKind::Gitlab, id).await
}

/// Where GitHub workflow run `id` lives, when exactly one instance holds it.
pub async fn run_home<S: Sql>(db: &S, id: u64) -> Result<Option<crate::sources::PipelineHome>> {
    home_on(db, crate::model::ForgeKind::Github, id).await
}

async fn home_on<S: Sql>(
    db: &S,
    forge: crate::model::ForgeKind,
    id: u64,
) -> Result<Option<crate::sources::PipelineHome>> {
    let rows = db
        .query(
            "SELECT instance, project_id, project_path FROM pipelines WHERE pipeline_id = ? AND forge = ? LIMIT 2",
            &[Val::int(id), Val::text(forge.as_str())],
        )
        .await?;
    Ok(match rows.as_slice() {
        [r] => Some((
            text_at(r, 0).unwrap_or_default(),
            u64_at(r, 1).unwrap_or(0),
            text_at(r, 2),
        )),
        _ => None,
    })
}

/// Where job `id` lives: (instance, pipeline id, project id, project path), when exactly
/// one instance holds it.
pub async fn job_home<S: Sql>(db: &S, id: u64) -> Result<Option<(String, u64, u64, Option<String>)>> {
    let rows = db
        .query(
            "SELECT j.instance, j.pipeline_id, p.project_id, p.project_path FROM jobs j LEFT JOIN pipelines p ON p.instance = j.instance AND p.pipeline_id = j.pipeline_id WHERE j.job_id = ? AND COALESCE(p.forge, 'gitlab') = 'gitlab' LIMIT 2",
            &[Val::int(id)],
        )
        .await?;
    Ok(match rows.as_slice() {
        [r] => Some((
            text_at(r, 0).unwrap_or_default(),
            u64_at(r, 1).unwrap_or(0),
            u64_at(r, 2).unwrap_or(0),
            text_at(r, 3),
        )),
        _ => None,
    })
}

pub async fn save_projection<S: Sql>(
    db: &S,
    forge: &str,
    instance: &str,
    pipeline_id: u64,
    before: &Projection,
    after: &Projection,
) -> Result<()> {
    if let Some(p) = &after.pipeline
        && before.pipeline.as_ref() != Some(p)
    {
        db.exec(
            "INSERT INTO pipelines (instance, pipeline_id, project_id, project_path, status, attempt, iid, ref, sha, source, trigger, forge) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (instance, pipeline_id) DO UPDATE SET project_id = excluded.project_id, project_path = excluded.project_path, status = excluded.status, attempt = excluded.attempt, iid = excluded.iid, ref = excluded.ref, sha = excluded.sha, source = excluded.source, trigger = excluded.trigger",
            &[
                Val::text(instance),
                Val::int(pipeline_id),
                Val::int(p.project_id),
                Val::opt_text(p.project_path.as_deref()),
                Val::opt_text(p.status.as_deref()),
                Val::Int(i64::from(p.attempt)),
                Val::opt_int(p.iid),
                Val::opt_text(p.git_ref.as_deref()),
                Val::opt_text(p.sha.as_deref()),
                Val::opt_text(p.source.as_deref()),
                Val::opt_text(p.trigger.as_deref()),
                Val::text(forge),
            ],
        )
        .await?;
    }
    // Every changed job in one statement (a delivery changes most of its pipeline's jobs).
    let changed: Vec<Val> = after
        .jobs
        .iter()
        .filter(|(id, job)| before.jobs.get(id) != Some(job))
        .flat_map(|(id, job)| {
            [
                Val::text(instance),
                Val::int(*id),
                Val::int(pipeline_id),
                Val::text(&job.status),
                Val::opt_text(job.name.as_deref()),
                Val::Int(i64::from(job.retried)),
            ]
        })
        .collect();
    for chunk in changed.chunks(6 * 500) {
        let rows = crate::sql::value_rows(6, chunk.len() / 6);
        db.exec(
            &format!(
                "INSERT INTO jobs (instance, job_id, pipeline_id, status, name, retried) VALUES {rows} \
                 ON CONFLICT (instance, job_id) DO UPDATE SET pipeline_id = excluded.pipeline_id, status = excluded.status, name = excluded.name, retried = excluded.retried"
            ),
            chunk,
        )
        .await?;
    }
    Ok(())
}
