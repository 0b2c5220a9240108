//! Users, tokens and settings in SQLite.

use chrono::{DateTime, Utc};

use super::{id_key, SqliteStore};
use crate::store::{Page, Result, TokenAuth, TokenRow, User, UserStore};
use crate::{ids, secrets};

impl UserStore for SqliteStore {
    async fn signing_key(&self) -> Result<Vec<u8>> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ('signing_key', ?) ON CONFLICT (key) DO NOTHING")
            .bind(secrets::new_key())
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_scalar("SELECT value FROM settings WHERE key = 'signing_key'").fetch_one(&self.pool).await?)
    }

    async fn user_count(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(&self.pool).await?)
    }

    async fn ensure_user(&self, name: &str) -> Result<User> {
        sqlx::query("INSERT INTO users (id, name, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(ids::new("usr"))
            .bind(name)
            .bind(ids::now())
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_as("SELECT id, name FROM users WHERE name = ?").bind(name).fetch_one(&self.pool).await?)
    }

    async fn insert_token(&self, t: &TokenRow) -> Result<()> {
        sqlx::query("INSERT INTO tokens (id, user_id, name, token_prefix, token_hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)")
            .bind(&t.id)
            .bind(&t.user_id)
            .bind(&t.name)
            .bind(&t.token_prefix)
            .bind(&t.token_hash)
            .bind(t.created_at)
            .bind(t.expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn token_by_hash(&self, hash: &[u8], now: DateTime<Utc>) -> Result<Option<TokenAuth>> {
        // Timestamps are stored as RFC 3339 in UTC, all in one form, so they compare as text.
        let sql = "SELECT id, user_id, expires_at <= ? AS expired, revoked_at IS NOT NULL AS revoked FROM tokens WHERE token_hash = ?";
        Ok(sqlx::query_as(sql).bind(now).bind(hash).fetch_optional(&self.pool).await?)
    }

    async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<()> {
        sqlx::query("UPDATE tokens SET last_used_at = ? WHERE id = ?").bind(at).bind(id).execute(&self.pool).await?;
        Ok(())
    }

    async fn list_tokens(&self, user_id: &str, page: &Page) -> Result<Vec<TokenRow>> {
        Ok(sqlx::query_as("SELECT * FROM tokens WHERE user_id = ? AND revoked_at IS NULL AND id < ? ORDER BY id DESC LIMIT ?")
            .bind(user_id)
            .bind(id_key(page))
            .bind(page.limit)
            .fetch_all(&self.pool)
            .await?)
    }

    async fn get_token(&self, user_id: &str, id: &str) -> Result<Option<TokenRow>> {
        Ok(sqlx::query_as("SELECT * FROM tokens WHERE user_id = ? AND revoked_at IS NULL AND id = ?").bind(user_id).bind(id).fetch_optional(&self.pool).await?)
    }

    async fn revoke_token(&self, user_id: &str, id: &str, at: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query("UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND id = ? AND revoked_at IS NULL")
            .bind(at)
            .bind(user_id)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
