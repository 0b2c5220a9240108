//! The retention sweep: Idempotency-Keys past their hours are deleted, checkpoints older
//! than the retention are deleted, sessions unused for as long expire and lose their
//! working directories, the logs, events and metrics of runs that ended as long ago are
//! deleted (the runs stay), and then the blobs nothing holds any more are collected.

use std::sync::Arc;
use std::time::Duration;

use super::{workdir, Engine};
use crate::store::{Expired, Store};

/// How often the retention sweep runs.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

impl<S: Store> Engine<S> {
    /// Deletes the checkpoints older than `retention`, expires the sessions unused for as
    /// long and removes their working directories, then the blobs nothing holds any more.
    pub async fn expire(&self, retention: Duration) -> crate::store::Result<Expired> {
        let now = chrono::Utc::now();
        let before = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let expired = self.store.expire(before, now).await?;
        for session in &expired.sessions {
            if !crate::ids::is(crate::ids::Prefix::Session, session) {
                tracing::error!(%session, "an expired session's id is not one: its folder is left");
                continue;
            }
            workdir::forget(&self.dir, session).await;
            let removed = workdir::remove_tree(&workdir::session_dir(&self.dir, session)).await;
            match removed {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(
                        %session,
                        %error,
                        "could not remove an expired session's directory"
                    )
                }
                _ => {}
            }
        }
        self.blobs.collect_garbage(&self.store).await;
        Ok(expired)
    }

    /// Runs the retention sweep now and then every `SWEEP_EVERY`; runs until the process
    /// ends.
    pub async fn sweep(self: Arc<Self>) {
        loop {
            let keys = self.limits.idempotency.as_millis() as i64;
            match self.store.expire_keys(keys).await {
                Ok(0) => {}
                Ok(keys) => tracing::info!(keys, "retention: deleted expired Idempotency-Keys"),
                Err(error) => tracing::error!(%error, "deleting expired Idempotency-Keys failed"),
            }
            match self.expire(self.limits.retention).await {
                Ok(expired) if expired != Expired::default() => {
                    tracing::info!(
                        checkpoints = expired.checkpoints,
                        sessions = expired.sessions.len(),
                        run_logs = expired.logs,
                        "retention: deleted"
                    )
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "the retention sweep failed"),
            }
            tokio::time::sleep(SWEEP_EVERY).await;
        }
    }
}
