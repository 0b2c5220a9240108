//! Idempotency-Keys and their answers, per user (see `vm0_api::idempotency`).

use super::SqlStore;
use crate::store::{KeptAnswer, KeyRow, KeyStore, Result};

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

    async fn answered_key(
        &self,
        user_id: &str,
        key: &str,
        lifetime_ms: i64,
    ) -> Result<Option<KeyRow>> {
        let sql = format!(
            "SELECT fingerprint, status, headers, body FROM idempotency_keys \
             WHERE user_id = $1 AND key = $2 AND status IS NOT NULL \
             AND created_ms >= {} - $3",
            self.now_ms()
        );
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(&sql)
                .bind(user_id)
                .bind(key)
                .bind(lifetime_ms)
                .fetch_optional(pool)
                .await?)
        })
    }

    async fn keep_answers(&self, answers: &[KeptAnswer], lifetime_ms: i64) -> Result<()> {
        let now = self.now_ms();
        // A row the request took (no status yet) or one past its lifetime is replaced; an
        // answer kept by another request of the key stays.
        let sql = format!(
            "INSERT INTO idempotency_keys (user_id, key, fingerprint, created_ms, status, \
             headers, body) VALUES ($1, $2, $3, {now}, $4, $5, $6) \
             ON CONFLICT (user_id, key) DO UPDATE SET fingerprint = excluded.fingerprint, \
             created_ms = excluded.created_ms, locked_until_ms = NULL, \
             status = excluded.status, headers = excluded.headers, body = excluded.body \
             WHERE (idempotency_keys.status IS NULL \
                    AND idempotency_keys.fingerprint = excluded.fingerprint) \
                OR idempotency_keys.created_ms < {now} - $7"
        );
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for answer in answers {
                sqlx::query(&sql)
                    .bind(&answer.user_id)
                    .bind(&answer.key)
                    .bind(&answer.fingerprint)
                    .bind(answer.status)
                    .bind(&answer.headers)
                    .bind(&answer.body)
                    .bind(lifetime_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
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
