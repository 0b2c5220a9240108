//! Runs, sessions, checkpoints and what runs record.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::QueryBuilder;

use vm0_types::RunStatus::{Pending, Running};

use super::{id_key, status, SqlStore};
use crate::store::{
    Batch, CheckpointRow, Counters, EventRow, Expired, FileRow, Kind, Lease, LogQuery, LogRow,
    MetricRow, NewCheckpoint, Page, Result, RunEnd, RunFilter, RunRow, RunStore, SessionRow,
    StorageRow, StoreError,
};

/// Rows a multi-row INSERT takes at most: well under the bound values SQLite (32,766)
/// and PostgreSQL (65,535) take for the widest table (8 columns).
const ROWS_PER_INSERT: usize = 1000;

/// The condition that a run's session has no run executing: a session's runs take turns
/// in its one working directory.
fn session_idle() -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM runs r WHERE r.session_id = runs.session_id AND r.status = {})",
        status(Running)
    )
}

/// The condition that a run (as `runs` or `r`) has not ended.
fn unended(runs: &str) -> String {
    format!("{runs}.status IN ({}, {})", status(Pending), status(Running))
}

/// Appends `id IN (…)` of `ids` (not empty) to `query`, for either backend.
fn push_id_in<'a, DB: sqlx::Database>(query: &mut QueryBuilder<'a, DB>, ids: &'a [String])
where
    &'a String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    query.push("id IN (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(id);
    }
    query.push(")");
}

/// Inserts the rows of `batch` in the transaction `tx`, of either backend.
macro_rules! insert_batch {
    ($tx:ident, $batch:expr) => {
        let batch: &Batch = $batch;
        for rows in batch.events.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::new("INSERT INTO run_events (run_id, id, event, data) ");
            insert.push_values(rows, |mut row, (run_id, event)| {
                row.push_bind(run_id)
                    .push_bind(event.id)
                    .push_bind(&event.event)
                    .push_bind(&event.data);
            });
            insert.build().execute(&mut *$tx).await?;
        }
        for rows in batch.logs.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::new(
                "INSERT INTO run_logs (run_id, seq, timestamp, type, level, message, metadata) ",
            );
            insert.push_values(rows, |mut row, (run_id, log)| {
                row.push_bind(run_id)
                    .push_bind(log.seq)
                    .push_bind(log.timestamp)
                    .push_bind(log.kind.to_string())
                    .push_bind(log.level.to_string())
                    .push_bind(&log.message)
                    .push_bind(Json(&log.metadata.0));
            });
            insert.build().execute(&mut *$tx).await?;
        }
        for rows in batch.metrics.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::new(
                "INSERT INTO run_metrics (run_id, seq, timestamp, cpu_percent, \
                 memory_used_mb, memory_total_mb, disk_used_mb, disk_total_mb) ",
            );
            insert.push_values(rows, |mut row, (run_id, seq, m)| {
                row.push_bind(run_id)
                    .push_bind(seq)
                    .push_bind(m.timestamp)
                    .push_bind(m.cpu_percent)
                    .push_bind(m.memory_used_mb)
                    .push_bind(m.memory_total_mb)
                    .push_bind(m.disk_used_mb)
                    .push_bind(m.disk_total_mb);
            });
            insert.build().execute(&mut *$tx).await?;
        }
    };
}

impl RunStore for SqlStore {
    async fn create_run(
        &self,
        r: &RunRow,
        session: Option<&SessionRow>,
        artifact: Option<&StorageRow>,
        first: &Batch,
    ) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if session.is_none() {
                // The run continues a session: one the retention sweep has not expired, checked
                // in this transaction so that the sweep cannot expire it in between.
                let live = sqlx::query(
                    "UPDATE sessions SET expired_at = expired_at \
                     WHERE id = $1 AND expired_at IS NULL",
                )
                .bind(&r.session_id)
                .execute(&mut *tx)
                .await?;
                if live.rows_affected() == 0 {
                    return Err(StoreError::InvalidState(format!(
                        "Session '{}' has expired",
                        r.session_id
                    )));
                }
            }
            if let Some(s) = session {
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, agent_id, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&s.id)
                .bind(&s.user_id)
                .bind(&s.agent_id)
                .bind(r.created_at)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(a) = artifact {
                sqlx::query(
                    "INSERT INTO storages (id, user_id, kind, name, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&a.id)
                .bind(&r.user_id)
                .bind(Kind::Artifact.as_str())
                .bind(a.name.as_str())
                .bind(a.created_at)
                .bind(a.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(super::conflict_or)?;
            }
            sqlx::query(
                "INSERT INTO runs (id, user_id, agent_id, agent_name, agent_version_id, session_id,
                                   from_checkpoint, status, prompt, variables, secrets, volumes,
                                   artifact_name, artifact_base, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .bind(&r.id)
            .bind(&r.user_id)
            .bind(&r.agent_id)
            .bind(&r.agent_name)
            .bind(&r.agent_version_id)
            .bind(&r.session_id)
            .bind(&r.from_checkpoint)
            .bind(r.status.to_string())
            .bind(&r.prompt)
            .bind(&r.variables)
            .bind(&r.secrets)
            .bind(&r.volumes)
            .bind(&r.artifact_name)
            .bind(&r.artifact_base)
            .bind(r.created_at)
            .execute(&mut *tx)
            .await?;
            insert_batch!(tx, first);
            tx.commit().await?;
            Ok(())
        })
    }

    async fn get_run(&self, user_id: &str, id: &str) -> Result<Option<RunRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as("SELECT * FROM runs WHERE user_id = $1 AND id = $2")
                .bind(user_id)
                .bind(id)
                .fetch_optional(pool)
                .await?)
        })
    }

    async fn list_runs(&self, user_id: &str, f: &RunFilter, page: &Page) -> Result<Vec<RunRow>> {
        on_pool!(self, |pool| {
            let status = f.status.map(|s| s.to_string());
            Ok(sqlx::query_as(
                "SELECT * FROM runs WHERE user_id = $1 AND id < $2
                   AND ($3 IS NULL OR agent_id = $4) AND ($5 IS NULL OR status = $6)
                   AND ($7 IS NULL OR created_at >= $8)
                 ORDER BY id DESC LIMIT $9",
            )
            .bind(user_id)
            .bind(id_key(page))
            .bind(&f.agent_id)
            .bind(&f.agent_id)
            .bind(&status)
            .bind(&status)
            .bind(f.since)
            .bind(f.since)
            .bind(page.limit)
            .fetch_all(pool)
            .await?)
        })
    }

    async fn get_session(&self, user_id: &str, id: &str) -> Result<Option<SessionRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT id, user_id, agent_id, expired_at FROM sessions \
                 WHERE user_id = $1 AND id = $2",
            )
            .bind(user_id)
            .bind(id)
            .fetch_optional(pool)
            .await?)
        })
    }

    async fn get_checkpoint(&self, user_id: &str, id: &str) -> Result<Option<CheckpointRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT c.id, c.session_id, s.agent_id \
                 FROM checkpoints c JOIN sessions s ON s.id = c.session_id \
                 WHERE s.user_id = $1 AND c.id = $2",
            )
            .bind(user_id)
            .bind(id)
            .fetch_optional(pool)
            .await?)
        })
    }

    async fn next_pending_run(&self) -> Result<Option<RunRow>> {
        on_pool!(self, |pool| {
            let sql = format!(
                "SELECT * FROM runs WHERE status = {} AND {} ORDER BY id LIMIT 1",
                status(Pending),
                session_idle()
            );
            Ok(sqlx::query_as(&sql).fetch_optional(pool).await?)
        })
    }

    async fn start_run(&self, id: &str, at: DateTime<Utc>, lease: &Lease) -> Result<bool> {
        on_pool!(self, |pool| {
            let sql = format!(
                "UPDATE runs SET status = {}, started_at = $1, executor = $2, \
                 lease_expires_at = $3 WHERE id = $4 AND status = {} AND {}",
                status(Running),
                status(Pending),
                session_idle()
            );
            let done = sqlx::query(&sql)
                .bind(at)
                .bind(&lease.executor)
                .bind(lease.until)
                .bind(id)
                .execute(pool)
                .await;
            match done {
                Ok(done) => Ok(done.rows_affected() == 1),
                // Another instance started a run of the session meanwhile, between the look
                // of `session_idle` and the write: the index that holds a session to one
                // running run refused this one, which stays pending.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                Err(error) => Err(error.into()),
            }
        })
    }

    async fn renew_leases(&self, lease: &Lease, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        on_pool!(self, |pool| {
            let mut query = QueryBuilder::new("UPDATE runs SET lease_expires_at = ");
            query
                .push_bind(lease.until)
                .push(format!(" WHERE status = {} AND executor = ", status(Running)))
                .push_bind(&lease.executor)
                .push(" AND ");
            push_id_in(&mut query, ids);
            query.build().execute(pool).await?;
            Ok(())
        })
    }

    async fn runs_to_stop(&self, executor: &str, ids: &[String]) -> Result<Vec<String>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        on_pool!(self, |pool| {
            // A run about to start here is still pending, with no executor: not one to stop.
            let mut query = QueryBuilder::new(
                "SELECT id FROM runs \
                 WHERE (cancel_requested OR completed_at IS NOT NULL OR executor <> ",
            );
            query.push_bind(executor).push(") AND ");
            push_id_in(&mut query, ids);
            Ok(query.build_query_scalar().fetch_all(pool).await?)
        })
    }

    async fn request_cancel(&self, id: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let sql = format!(
                "UPDATE runs SET cancel_requested = TRUE WHERE id = $1 AND status = {}",
                status(Running)
            );
            let done = sqlx::query(&sql).bind(id).execute(pool).await?;
            Ok(done.rows_affected() == 1)
        })
    }

    async fn end_lost_runs(
        &self,
        executor: Option<&str>,
        now: DateTime<Utc>,
        end: &RunEnd,
    ) -> Result<Vec<String>> {
        // A running run without a lease was started before leases were kept.
        let lost = match executor {
            Some(_) => "executor = $4",
            None => "(lease_expires_at IS NULL OR lease_expires_at < $4)",
        };
        let sql = format!(
            "UPDATE runs SET status = $1, error = $2, completed_at = $3, secrets = '{{}}' \
             WHERE status = {} AND {lost} RETURNING id",
            status(Running)
        );
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let query = sqlx::query_scalar(&sql)
                .bind(end.status.to_string())
                .bind(&end.error)
                .bind(end.completed_at);
            let ended: Vec<String> = match executor {
                Some(executor) => query.bind(executor).fetch_all(&mut *tx).await?,
                None => query.bind(now).fetch_all(&mut *tx).await?,
            };
            for id in &ended {
                sqlx::query("DELETE FROM blob_pins WHERE holder = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(ended)
        })
    }

    async fn end_run(
        &self,
        id: &str,
        end: &RunEnd,
        checkpoint: Option<&NewCheckpoint>,
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let sql = format!(
                "UPDATE runs SET status = $1, error = $2, execution_time_ms = $3, \
                 completed_at = $4, checkpoint_id = $5, artifact_version = $6, secrets = '{{}}' \
                 WHERE id = $7 AND {}",
                unended("runs")
            );
            let done = sqlx::query(&sql)
                .bind(end.status.to_string())
                .bind(&end.error)
                .bind(end.execution_time_ms)
                .bind(end.completed_at)
                .bind(&end.checkpoint_id)
                .bind(&end.artifact_version)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Ok(false);
            }
            if let Some(c) = checkpoint {
                sqlx::query(
                    "INSERT INTO checkpoints (id, session_id, run_id, created_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(&c.row.id)
                .bind(&c.row.session_id)
                .bind(id)
                .bind(end.completed_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query("UPDATE sessions SET head_checkpoint_id = $1 WHERE id = $2")
                    .bind(&c.row.id)
                    .bind(&c.row.session_id)
                    .execute(&mut *tx)
                    .await?;
                for rows in c.files.chunks(ROWS_PER_INSERT) {
                    let mut insert = QueryBuilder::new(
                        "INSERT INTO checkpoint_files (checkpoint_id, path, size, hash) ",
                    );
                    insert.push_values(rows, |mut row, file| {
                        row.push_bind(&c.row.id)
                            .push_bind(file.path.as_str())
                            .push_bind(file.size)
                            .push_bind(file.hash.as_str());
                    });
                    insert.build().execute(&mut *tx).await?;
                }
            }
            sqlx::query("DELETE FROM blob_pins WHERE holder = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    async fn checkpoint_files(&self, checkpoint_id: &str) -> Result<Vec<FileRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT path, size, hash FROM checkpoint_files \
                 WHERE checkpoint_id = $1 ORDER BY path",
            )
            .bind(checkpoint_id)
            .fetch_all(pool)
            .await?)
        })
    }

    async fn head_checkpoint(&self, session_id: &str) -> Result<Option<String>> {
        on_pool!(self, |pool| {
            let head: Option<Option<String>> =
                sqlx::query_scalar("SELECT head_checkpoint_id FROM sessions WHERE id = $1")
                    .bind(session_id)
                    .fetch_optional(pool)
                    .await?;
            Ok(head.flatten())
        })
    }

    async fn expire(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<Expired> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let sql = format!(
                "UPDATE sessions SET expired_at = $1
                 WHERE expired_at IS NULL
                   AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.session_id = sessions.id
                     AND (COALESCE(r.completed_at, r.created_at) >= $2 OR {}))
                 RETURNING id",
                unended("r")
            );
            let sessions =
                sqlx::query_scalar(&sql).bind(now).bind(before).fetch_all(&mut *tx).await?;
            // After the sessions expire: a live session keeps its head however old, since
            // its next run continues from it.
            let checkpoints = sqlx::query(
                "DELETE FROM checkpoints WHERE created_at < $1 AND id NOT IN \
                 (SELECT head_checkpoint_id FROM sessions \
                  WHERE expired_at IS NULL AND head_checkpoint_id IS NOT NULL)",
            )
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(Expired { checkpoints, sessions })
        })
    }

    async fn cancel_pending_run(&self, id: &str, end: &RunEnd) -> Result<bool> {
        on_pool!(self, |pool| {
            let sql = format!(
                "UPDATE runs SET status = $1, error = $2, completed_at = $3, secrets = '{{}}' \
                 WHERE id = $4 AND status = {}",
                status(Pending)
            );
            let done = sqlx::query(&sql)
                .bind(end.status.to_string())
                .bind(&end.error)
                .bind(end.completed_at)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    async fn counters(&self, run_id: &str) -> Result<Counters> {
        on_pool!(self, |pool| {
            let (event, log, metric): (i64, i64, i64) = sqlx::query_as(
                "SELECT (SELECT COALESCE(MAX(id), 0) FROM run_events WHERE run_id = $1),
                        (SELECT COALESCE(MAX(seq), 0) FROM run_logs WHERE run_id = $1),
                        (SELECT COALESCE(MAX(seq), 0) FROM run_metrics WHERE run_id = $1)",
            )
            .bind(run_id)
            .fetch_one(pool)
            .await?;
            Ok(Counters { event, log, metric })
        })
    }

    async fn append(&self, batch: &Batch) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            insert_batch!(tx, batch);
            tx.commit().await?;
            Ok(())
        })
    }

    async fn events_after(&self, run_id: &str, after: i64, limit: i64) -> Result<Vec<EventRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT id, event, data FROM run_events \
                 WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(run_id)
            .bind(after)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    async fn list_logs(&self, run_id: &str, q: &LogQuery, page: &Page) -> Result<Vec<LogRow>> {
        on_pool!(self, |pool| {
            let (compare, order, start) =
                if q.descending { ("<", "DESC", i64::MAX) } else { (">", "ASC", 0) };
            let after = page.after.as_deref().and_then(|a| a.parse().ok()).unwrap_or(start);
            let kind = q.kind.map(|k| k.to_string());
            let sql = format!(
                "SELECT * FROM run_logs WHERE run_id = $1 AND seq {compare} $2
                   AND ($3 IS NULL OR type = $4) AND ($5 IS NULL OR timestamp >= $6)
                   AND ($7 IS NULL OR timestamp < $8)
                   AND seq > $10
                 ORDER BY seq {order} LIMIT $9"
            );
            Ok(sqlx::query_as(&sql)
                .bind(run_id)
                .bind(after)
                .bind(&kind)
                .bind(&kind)
                .bind(q.since)
                .bind(q.since)
                .bind(q.until)
                .bind(q.until)
                .bind(page.limit)
                .bind(q.after_sequence)
                .fetch_all(pool)
                .await?)
        })
    }

    async fn metrics(&self, run_id: &str) -> Result<Vec<MetricRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as("SELECT * FROM run_metrics WHERE run_id = $1 ORDER BY seq")
                .bind(run_id)
                .fetch_all(pool)
                .await?)
        })
    }
}
