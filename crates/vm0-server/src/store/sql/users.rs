//! Users, tokens and settings.

use chrono::{DateTime, Utc};

use super::{id_key, SqlStore};
use crate::ids;
use crate::store::{Condition, Page, Reserved, Result, TokenAuth, TokenRow, User, UserStore};

impl UserStore for SqlStore {
    async fn setting(&self, key: &str, initial: &[u8]) -> Result<Vec<u8>> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(initial)
            .execute(pool)
            .await?;
            Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
                .bind(key)
                .fetch_one(pool)
                .await?)
        })
    }

    async fn create_first_user(&self, name: &str) -> Result<Option<User>> {
        // Of two instances inserting at once, the second waits on the unique name and then
        // inserts nothing.
        let sql = "INSERT INTO users (id, name, created_at) SELECT $1, $2, $3 \
                   WHERE NOT EXISTS (SELECT 1 FROM users)
                   ON CONFLICT (name) DO NOTHING RETURNING id, name";
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(sql)
                .bind(ids::new(ids::Prefix::User))
                .bind(name)
                .bind(ids::now())
                .fetch_optional(pool)
                .await?)
        })
    }

    async fn ensure_user(&self, name: &str) -> Result<User> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO users (id, name, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(ids::new(ids::Prefix::User))
            .bind(name)
            .bind(ids::now())
            .execute(pool)
            .await?;
            Ok(sqlx::query_as("SELECT id, name FROM users WHERE name = $1")
                .bind(name)
                .fetch_one(pool)
                .await?)
        })
    }

    async fn insert_token(&self, t: &TokenRow) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO tokens \
                 (id, user_id, name, token_prefix, token_hash, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&t.id)
            .bind(&t.user_id)
            .bind(&t.name)
            .bind(&t.token_prefix)
            .bind(&t.token_hash)
            .bind(t.created_at)
            .bind(t.expires_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    async fn token_by_hash(&self, hash: &[u8], now: DateTime<Utc>) -> Result<Option<TokenAuth>> {
        on_pool!(self, |pool| {
            // SQLite stores timestamps as RFC 3339 in UTC, all in one form, so they compare as
            // text there; PostgreSQL compares them as timestamps.
            let sql = "SELECT id, user_id, expires_at <= $1 AS expired, \
                       revoked_at IS NOT NULL AS revoked FROM tokens WHERE token_hash = $2";
            Ok(sqlx::query_as(sql).bind(now).bind(hash).fetch_optional(pool).await?)
        })
    }

    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        on_pool!(self, |pool| {
            sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    async fn list_tokens(&self, user_id: &str, page: &Page) -> Result<Vec<TokenRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT * FROM tokens WHERE user_id = $1 AND revoked_at IS NULL AND id < $2 \
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(user_id)
            .bind(id_key(page))
            .bind(page.limit)
            .fetch_all(pool)
            .await?)
        })
    }

    async fn token_live(&self, id: &str, now: DateTime<Utc>) -> Result<bool> {
        on_pool!(self, |pool| {
            let live: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM tokens WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2",
            )
            .bind(id)
            .bind(now)
            .fetch_optional(pool)
            .await?;
            Ok(live.is_some())
        })
    }

    async fn get_token(&self, user_id: &str, id: &str) -> Result<Option<TokenRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT * FROM tokens WHERE user_id = $1 AND revoked_at IS NULL AND id = $2",
            )
            .bind(user_id)
            .bind(id)
            .fetch_optional(pool)
            .await?)
        })
    }

    async fn reserve_requests(
        &self,
        token_hash: &str,
        window_ms: i64,
        count: u32,
    ) -> Result<Reserved> {
        // The clock read once, so that the window and the time within it agree.
        let sql = format!(
            "WITH clock AS (SELECT {} AS now_ms) \
             INSERT INTO rate_windows (token_hash, window_ms, used) \
             SELECT $1, now_ms - now_ms % $2, $3 FROM clock WHERE true \
             ON CONFLICT (token_hash, window_ms) DO UPDATE SET used = rate_windows.used + $3 \
             RETURNING used, window_ms, (SELECT now_ms FROM clock)",
            self.now_ms()
        );
        on_pool!(self, |pool| {
            let (used, window_start_ms, now_ms): (i64, i64, i64) = sqlx::query_as(&sql)
                .bind(token_hash)
                .bind(window_ms)
                .bind(i64::from(count))
                .fetch_one(pool)
                .await?;
            Ok(Reserved { used, window_start_ms, now_ms })
        })
    }

    async fn forget_rate_windows(&self, before_ms: i64) -> Result<u64> {
        on_pool!(self, |pool| {
            let sql = "DELETE FROM rate_windows WHERE window_ms < $1";
            Ok(sqlx::query(sql).bind(before_ms).execute(pool).await?.rows_affected())
        })
    }

    async fn revoke_token(
        &self,
        user_id: &str,
        id: &str,
        at: DateTime<Utc>,
        condition: Condition<'_, TokenRow>,
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            lock_and_check!(
                tx,
                "UPDATE tokens SET revoked_at = revoked_at WHERE user_id = $1 AND id = $2",
                "SELECT * FROM tokens WHERE user_id = $1 AND id = $2 AND revoked_at IS NULL",
                user_id,
                id,
                condition
            );
            let done = sqlx::query(
                "UPDATE tokens SET revoked_at = $1 \
                 WHERE user_id = $2 AND id = $3 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        })
    }
}
