//! Idempotency-Keys and their answers, per user (see `vm0_api::idempotency`).

use super::SqlStore;
use crate::store::{KeyRow, KeyStore, Result};

impl KeyStore for SqlStore {
    async fn take_key(
        &self,
        user_id: &str,
        key: &str,
        fingerprint: &str,
        lock_ms: i64,
        lifetime_ms: i64,
    ) -> Result<Option<KeyRow>> {
        let now = self.now_ms();
        // A key past its lifetime, or whose request's instance died before it answered,
        // is free again.
        let free = format!(
            "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 \
             AND (created_ms < {now} - $3 OR (status IS NULL AND locked_until_ms < {now}))"
        );
        let take = format!(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, created_ms, \
             locked_until_ms) VALUES ($1, $2, $3, {now}, {now} + $4) ON CONFLICT DO NOTHING"
        );
        on_pool!(self, |pool| {
            // One write for a fresh key, the common case; freeing comes only after a
            // conflict, and then the key is taken again if it was freed.
            let take =
                || sqlx::query(&take).bind(user_id).bind(key).bind(fingerprint).bind(lock_ms);
            if take().execute(pool).await?.rows_affected() == 1 {
                return Ok(None);
            }
            let freed = sqlx::query(&free).bind(user_id).bind(key).bind(lifetime_ms);
            if freed.execute(pool).await?.rows_affected() > 0
                && take().execute(pool).await?.rows_affected() == 1
            {
                return Ok(None);
            }
            let held: Option<KeyRow> = sqlx::query_as(
                "SELECT fingerprint, status, headers, body FROM idempotency_keys \
                 WHERE user_id = $1 AND key = $2",
            )
            .bind(user_id)
            .bind(key)
            .fetch_optional(pool)
            .await?;
            // Freed between the two statements: held by the request that frees it, then.
            Ok(Some(held.unwrap_or(KeyRow {
                fingerprint: fingerprint.to_string(),
                status: None,
                headers: None,
                body: None,
            })))
        })
    }

    async fn keep_answer(
        &self,
        user_id: &str,
        key: &str,
        fingerprint: &str,
        answer: (i64, &str, &str),
    ) -> Result<()> {
        let (status, headers, body) = answer;
        on_pool!(self, |pool| {
            sqlx::query(
                "UPDATE idempotency_keys SET status = $4, headers = $5, body = $6, \
                 locked_until_ms = NULL \
                 WHERE user_id = $1 AND key = $2 AND fingerprint = $3 AND status IS NULL",
            )
            .bind(user_id)
            .bind(key)
            .bind(fingerprint)
            .bind(status)
            .bind(headers)
            .bind(body)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    async fn free_key(&self, user_id: &str, key: &str, fingerprint: &str) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "DELETE FROM idempotency_keys \
                 WHERE user_id = $1 AND key = $2 AND fingerprint = $3 AND status IS NULL",
            )
            .bind(user_id)
            .bind(key)
            .bind(fingerprint)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    async fn expire_keys(&self, lifetime_ms: i64) -> Result<u64> {
        let sql = format!("DELETE FROM idempotency_keys WHERE created_ms < {} - $1", self.now_ms());
        on_pool!(self, |pool| {
            Ok(sqlx::query(&sql).bind(lifetime_ms).execute(pool).await?.rows_affected())
        })
    }
}
