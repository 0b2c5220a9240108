//! Runs, sessions, checkpoints and what runs record.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::QueryBuilder;

use vm0_types::RunEvent;
use vm0_types::RunStatus::{Pending, Running};

use super::storages::commit_in;
use super::{id_key, status, Pool, SqlStore};
use crate::store::{
    event_row, Batch, CheckpointRow, Counters, Ending, EventRow, Expired, Kind, Lease, LogQuery,
    LogRow, Manifest, MetricRow, Page, Result, RunEnd, RunFilter, RunRow, RunStore, SessionRow,
    StorageRow, StoreError, EVENTS_CHANNEL, STOP_CHANNEL,
};

/// Rows a multi-row INSERT takes at most: well under the bound values SQLite (32,766)
/// and PostgreSQL (65,535) take for the widest table (8 columns).
const ROWS_PER_INSERT: usize = 1000;

/// The lock, on PostgreSQL, that serializes the claims of one user's runs across
/// instances while a cap on their running runs holds: a transaction's advisory lock on
/// the user of the run `$1`, in a key space of its own.
const USER_CLAIM_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtext('vm0 user claims'), \
     hashtext((SELECT user_id FROM runs WHERE id = $1)))";

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

/// A run's counters: its last event id, log sequence and metric sequence.
const COUNTERS: &str = "SELECT (SELECT COALESCE(MAX(id), 0) FROM run_events WHERE run_id = $1),
        (SELECT COALESCE(MAX(seq), 0) FROM run_logs WHERE run_id = $1),
        (SELECT COALESCE(MAX(seq), 0) FROM run_metrics WHERE run_id = $1)";

/// Records the checkpoint `c` of run `run`, made at `at`, in the transaction `tx`, of
/// either backend: its row, its manifest, and its place as its session's head.
macro_rules! insert_checkpoint {
    ($tx:ident, $run:expr, $c:expr, $at:expr) => {
        sqlx::query(
            "INSERT INTO checkpoints (id, session_id, run_id, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&$c.row.id)
        .bind(&$c.row.session_id)
        .bind($run)
        .bind($at)
        .execute(&mut *$tx)
        .await?;
        sqlx::query("UPDATE sessions SET head_checkpoint_id = $1 WHERE id = $2")
            .bind(&$c.row.id)
            .bind(&$c.row.session_id)
            .execute(&mut *$tx)
            .await?;
        for rows in $c.manifest.files.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::new(
                "INSERT INTO checkpoint_files (checkpoint_id, path, size, hash, mode) ",
            );
            insert.push_values(rows, |mut row, f| {
                row.push_bind(&$c.row.id)
                    .push_bind(f.file.path.as_str())
                    .push_bind(f.file.size)
                    .push_bind(f.file.hash.as_str())
                    .push_bind(f.mode);
            });
            insert.build().execute(&mut *$tx).await?;
        }
        for rows in $c.manifest.entries.chunks(ROWS_PER_INSERT) {
            let mut insert = QueryBuilder::new(
                "INSERT INTO checkpoint_entries (checkpoint_id, path, mode, target) ",
            );
            insert.push_values(rows, |mut row, entry| {
                row.push_bind(&$c.row.id)
                    .push_bind(entry.path.as_str())
                    .push_bind(entry.mode)
                    .push_bind(&entry.target);
            });
            insert.build().execute(&mut *$tx).await?;
        }
    };
}

/// Checks the fences of `batch` in the transaction `tx`, of either backend, each by an
/// update of its run's row that changes nothing but holds the row's lock until the
/// transaction ends, so that no end or claim of the run commits in between: the runs
/// whose rows are refused, no longer running under the epoch their writer holds.
macro_rules! check_fences {
    ($tx:ident, $batch:expr) => {{
        let mut fences = $batch.fences.clone();
        // In one order everywhere, so that two transactions never wait for each other.
        fences.sort();
        let sql = format!(
            "UPDATE runs SET epoch = epoch WHERE id = $1 AND epoch = $2 AND status = {}",
            status(Running)
        );
        let mut refused = Vec::new();
        for (run, epoch) in fences {
            let held = sqlx::query(&sql).bind(&run).bind(epoch).execute(&mut *$tx).await?;
            if held.rows_affected() == 0 {
                refused.push(run);
            }
        }
        refused
    }};
}

/// Appends `column IN (…)` of `ids` (not empty) to `query`, for either backend.
fn push_in<'a, DB: sqlx::Database>(
    query: &mut QueryBuilder<'a, DB>,
    column: &str,
    ids: &'a [String],
) where
    &'a String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    query.push(column).push(" IN (");
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

/// How many runs' logs one transaction of the retention deletes.
const LOGS_EXPIRED_AT_ONCE: i64 = 100;

impl SqlStore {
    /// Deletes the logs, events and metrics of the runs that ended before `before`, a
    /// hundred runs to a transaction, marking each run with `now`; how many runs.
    async fn expire_logs(&self, before: DateTime<Utc>, now: DateTime<Utc>) -> Result<u64> {
        let mark = format!(
            // The outer condition again: of instances sweeping at once, PostgreSQL rechecks
            // it on a row another just marked, where it would not run the subquery again.
            "UPDATE runs SET logs_expired_at = $1 WHERE logs_expired_at IS NULL AND id IN \
             (SELECT id FROM runs WHERE logs_expired_at IS NULL AND completed_at < $2 \
             AND NOT ({}) LIMIT $3) RETURNING id",
            unended("runs")
        );
        let mut expired = 0;
        loop {
            let done: u64 = on_pool!(self, |pool| {
                let mut tx = pool.begin().await?;
                let ids: Vec<String> = sqlx::query_scalar(&mark)
                    .bind(now)
                    .bind(before)
                    .bind(LOGS_EXPIRED_AT_ONCE)
                    .fetch_all(&mut *tx)
                    .await?;
                if !ids.is_empty() {
                    for table in ["run_logs", "run_events", "run_metrics"] {
                        let mut delete = QueryBuilder::new(format!("DELETE FROM {table} WHERE "));
                        push_in(&mut delete, "run_id", &ids);
                        delete.build().execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                Ok::<u64, StoreError>(ids.len() as u64)
            })?;
            expired += done;
            if done < LOGS_EXPIRED_AT_ONCE as u64 {
                return Ok(expired);
            }
        }
    }
}

impl RunStore for SqlStore {
    async fn create_run(
        &self,
        r: &RunRow,
        session: Option<&SessionRow>,
        artifact: Option<&StorageRow>,
        first: &Batch,
        pending_cap: u32,
    ) -> Result<()> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if pending_cap > 0 {
                // The write lock first (on SQLite, the database's), then the count it holds.
                sqlx::query("UPDATE users SET name = name WHERE id = $1")
                    .bind(&r.user_id)
                    .execute(&mut *tx)
                    .await?;
                let pending: i64 = sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM runs WHERE user_id = $1 AND status = {}",
                    status(Pending)
                ))
                .bind(&r.user_id)
                .fetch_one(&mut *tx)
                .await?;
                if pending >= i64::from(pending_cap) {
                    return Err(StoreError::TooMany);
                }
            }
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

    async fn next_pending_run(&self, running_cap: Option<i64>) -> Result<Option<RunRow>> {
        // Each user's oldest startable run, and how many runs each user has executing:
        // the head of the user with the fewest goes first, the oldest head on a tie.
        let sql = format!(
            "WITH busy AS (SELECT user_id, COUNT(*) AS running FROM runs \
                           WHERE status = {running} GROUP BY user_id), \
                  heads AS (SELECT user_id, MIN(id) AS id FROM runs \
                            WHERE status = {pending} AND {idle} GROUP BY user_id) \
             SELECT runs.* FROM heads \
             JOIN runs ON runs.id = heads.id \
             LEFT JOIN busy ON busy.user_id = heads.user_id \
             WHERE $1 IS NULL OR COALESCE(busy.running, 0) < $1 \
             ORDER BY COALESCE(busy.running, 0), heads.id LIMIT 1",
            running = status(Running),
            pending = status(Pending),
            idle = session_idle()
        );
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(&sql).bind(running_cap).fetch_optional(pool).await?)
        })
    }

    async fn start_run(
        &self,
        id: &str,
        at: DateTime<Utc>,
        lease: &Lease,
        running_cap: Option<i64>,
    ) -> Result<Option<RunRow>> {
        let sql = format!(
            "UPDATE runs SET status = {running}, started_at = $1, executor = $2, \
             lease_until_ms = {} + $3, epoch = epoch + 1, \
             base_checkpoint_id = COALESCE(from_checkpoint, \
               (SELECT head_checkpoint_id FROM sessions s WHERE s.id = runs.session_id)) \
             WHERE id = $4 AND status = {} AND {} \
             AND ($5 IS NULL OR (SELECT COUNT(*) FROM runs mine \
                  WHERE mine.user_id = runs.user_id AND mine.status = {running}) < $5) \
             RETURNING *",
            self.now_ms(),
            status(Pending),
            session_idle(),
            running = status(Running),
        );
        let postgres = matches!(self.pool, Pool::Postgres(_));
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            if postgres && running_cap.is_some() {
                // SQLite runs one writer at a time; on PostgreSQL, two instances claiming
                // runs of one user at once would each count the other's claim out.
                sqlx::query(USER_CLAIM_LOCK).bind(id).execute(&mut *tx).await?;
            }
            let claimed = sqlx::query_as(&sql)
                .bind(at)
                .bind(&lease.executor)
                .bind(lease.length.as_millis() as i64)
                .bind(id)
                .bind(running_cap)
                .fetch_optional(&mut *tx)
                .await;
            let claimed = match claimed {
                Ok(run) => tx.commit().await.map(|()| run),
                Err(error) => Err(error),
            };
            match claimed {
                Ok(run) => Ok(run),
                // Another instance started a run of the session meanwhile, between the look
                // of `session_idle` and the write: the index that holds a session to one
                // running run refused this one, which stays pending.
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
                Err(error) => Err(error.into()),
            }
        })
    }

    async fn renew_leases(&self, lease: &Lease, held: &[(String, i64)]) -> Result<Vec<String>> {
        // One statement a run, each locking one row: a multi-row update would lock them in
        // an order of its own, against the recorder's fences in id order.
        let sql = format!(
            "UPDATE runs SET lease_until_ms = {} + $1 \
             WHERE id = $2 AND epoch = $3 AND status = {} AND executor = $4",
            self.now_ms(),
            status(Running)
        );
        let mut renewed = Vec::new();
        for (id, epoch) in held {
            let done = on_pool!(self, |pool| {
                sqlx::query(&sql)
                    .bind(lease.length.as_millis() as i64)
                    .bind(id)
                    .bind(epoch)
                    .bind(&lease.executor)
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
            if done == 1 {
                renewed.push(id.clone());
            }
        }
        Ok(renewed)
    }

    async fn runs_to_stop(&self, held: &[(String, i64)]) -> Result<Vec<String>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = held.iter().map(|(id, _)| id.clone()).collect();
        let rows: Vec<(String, i64, String, bool)> = on_pool!(self, |pool| {
            let mut query =
                QueryBuilder::new("SELECT id, epoch, status, cancel_requested FROM runs WHERE ");
            push_in(&mut query, "id", &ids);
            query.build_query_as().fetch_all(pool).await?
        });
        let running = Running.to_string();
        Ok(rows
            .into_iter()
            .filter(|(id, epoch, status, cancel)| {
                *cancel || *status != running || !held.contains(&(id.clone(), *epoch))
            })
            .map(|(id, ..)| id)
            .collect())
    }

    async fn request_cancel(&self, id: &str) -> Result<bool> {
        on_pool!(self, |pool| {
            let sql = format!(
                "UPDATE runs SET cancel_requested = TRUE WHERE id = $1 AND status = {}",
                status(Running)
            );
            let mut tx = pool.begin().await?;
            let done = sqlx::query(&sql).bind(id).execute(&mut *tx).await?;
            if done.rows_affected() == 1 {
                signal!(self, tx, STOP_CHANNEL, [id]);
            }
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        })
    }

    async fn lost_runs(&self, executor: Option<&str>) -> Result<Vec<(String, i64)>> {
        // A running run without a lease was started before leases were kept.
        let lost = match executor {
            Some(_) => "executor = $1".to_string(),
            None => format!("(lease_until_ms IS NULL OR lease_until_ms < {})", self.now_ms()),
        };
        let sql =
            format!("SELECT id, epoch FROM runs WHERE status = {} AND {lost}", status(Running));
        on_pool!(self, |pool| {
            let query = sqlx::query_as(&sql);
            Ok(match executor {
                Some(executor) => query.bind(executor).fetch_all(pool).await?,
                None => query.fetch_all(pool).await?,
            })
        })
    }

    async fn end_run(
        &self,
        id: &str,
        ending: Ending,
        end: &RunEnd,
    ) -> Result<Option<Vec<RunEvent>>> {
        let (state, epoch) = match ending {
            Ending::Pending => (format!("status = {}", status(Pending)), None),
            Ending::Held(epoch) => (format!("status = {}", status(Running)), Some(epoch)),
            Ending::Lapsed(epoch) => (
                format!(
                    "status = {} AND (lease_until_ms IS NULL OR lease_until_ms < {})",
                    status(Running),
                    self.now_ms()
                ),
                Some(epoch),
            ),
        };
        let sql = format!(
            "UPDATE runs SET status = $1, error = $2, execution_time_ms = $3, \
             completed_at = $4, checkpoint_id = $5, artifact_version = $6, secrets = '{{}}' \
             WHERE id = $7 AND {state} AND ($8 IS NULL OR epoch = $8)"
        );
        let (words, last_log) = end.last_words();
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query(&sql)
                .bind(end.status.to_string())
                .bind(&end.error)
                .bind(end.execution_time_ms)
                .bind(end.completed_at)
                .bind(end.checkpoint.as_ref().map(|c| &c.row.id))
                .bind(end.artifact.as_ref().map(|a| &a.version.id))
                .bind(id)
                .bind(epoch)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                return Ok(None);
            }
            if let Some(c) = &end.checkpoint {
                insert_checkpoint!(tx, id, c, end.completed_at);
            }
            if let Some(a) = &end.artifact {
                let live = sqlx::query(
                    "UPDATE storages SET updated_at = updated_at WHERE id = $1 AND user_id = $2",
                )
                .bind(&a.storage_id)
                .bind(&a.user_id)
                .execute(&mut *tx)
                .await?;
                if live.rows_affected() == 0 {
                    return Err(StoreError::InvalidState(
                        "The run's artifact was deleted during the run".to_string(),
                    ));
                }
                commit_in!(tx, &a.storage_id, &a.user_id, &a.version);
            }
            // Numbered after everything the run recorded: the lock on its row, which the
            // update above took, keeps any other writer out until this commits.
            let (event, log, _): (i64, i64, i64) =
                sqlx::query_as(COUNTERS).bind(id).fetch_one(&mut *tx).await?;
            let events: Vec<RunEvent> =
                words.into_iter().zip(event + 1..).map(|(data, n)| data.numbered(n)).collect();
            let last = Batch {
                events: events.iter().map(|e| (id.to_string(), event_row(e))).collect(),
                logs: vec![(id.to_string(), LogRow { seq: log + 1, ..last_log })],
                ..Batch::default()
            };
            insert_batch!(tx, &last);
            sqlx::query("DELETE FROM blob_pins WHERE holder = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            // Its subscribers elsewhere read its last events, and its executor, if another
            // instance ended it, stops it.
            signal!(self, tx, EVENTS_CHANNEL, [id]);
            signal!(self, tx, STOP_CHANNEL, [id]);
            // The fault suite kills an instance here, in the middle of a run's end.
            fail::fail_point!("end-run-commit");
            tx.commit().await?;
            Ok(Some(events))
        })
    }

    async fn checkpoint_manifest(&self, checkpoint_id: &str) -> Result<Manifest> {
        on_pool!(self, |pool| {
            let files = sqlx::query_as(
                "SELECT path, size, hash, mode FROM checkpoint_files \
                 WHERE checkpoint_id = $1 ORDER BY path",
            )
            .bind(checkpoint_id)
            .fetch_all(pool)
            .await?;
            let entries = sqlx::query_as(
                "SELECT path, mode, target FROM checkpoint_entries \
                 WHERE checkpoint_id = $1 ORDER BY path",
            )
            .bind(checkpoint_id)
            .fetch_all(pool)
            .await?;
            Ok(Manifest { files, entries })
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
            let logs = self.expire_logs(before, now).await?;
            Ok(Expired { checkpoints, sessions, logs })
        })
    }

    async fn counters(&self, run_id: &str) -> Result<Counters> {
        on_pool!(self, |pool| {
            let (event, log, metric): (i64, i64, i64) =
                sqlx::query_as(COUNTERS).bind(run_id).fetch_one(pool).await?;
            Ok(Counters { event, log, metric })
        })
    }

    async fn append(&self, batch: &Batch) -> Result<Vec<String>> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let refused = check_fences!(tx, batch);
            if refused.is_empty() {
                insert_batch!(tx, batch);
            } else {
                insert_batch!(tx, &batch.without(&refused));
            }
            // The runs with new events, each once, for their subscribers elsewhere.
            let mut runs: Vec<&str> = batch.events.iter().map(|(run, _)| run.as_str()).collect();
            runs.dedup();
            runs.retain(|run| !refused.iter().any(|r| r == run));
            signal!(self, tx, EVENTS_CHANNEL, runs);
            tx.commit().await?;
            Ok(refused)
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
