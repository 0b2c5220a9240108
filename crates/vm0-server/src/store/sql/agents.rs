//! Agents and their versions.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;

use super::{conflict_or, holds, id_key, int_key, SqlStore};
use crate::ids;
use crate::store::{AgentRow, AgentStore, AgentVersionRow, Condition, Page, Result};

impl AgentStore for SqlStore {
    async fn create_agent(
        &self,
        user_id: &str,
        name: &str,
        config: &Map<String, Value>,
        at: DateTime<Utc>,
    ) -> Result<AgentRow> {
        on_pool!(self, |pool| {
            let (agent_id, version_id) =
                (ids::new(ids::Prefix::Agent), ids::new(ids::Prefix::AgentVersion));
            let mut tx = pool.begin().await?;
            let agent = sqlx::query_as(
                "INSERT INTO agents \
                 (id, user_id, name, current_version_id, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING *",
            )
            .bind(&agent_id)
            .bind(user_id)
            .bind(name)
            .bind(&version_id)
            .bind(at)
            .bind(at)
            .fetch_one(&mut *tx)
            .await
            .map_err(conflict_or)?;
            sqlx::query(
                "INSERT INTO agent_versions (id, agent_id, version_number, config, created_at) \
                 VALUES ($1, $2, 1, $3, $4)",
            )
            .bind(&version_id)
            .bind(&agent_id)
            .bind(Json(config))
            .bind(at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(agent)
        })
    }

    async fn list_agents(
        &self,
        user_id: &str,
        name: Option<&str>,
        page: &Page,
    ) -> Result<Vec<AgentRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT * FROM agents WHERE user_id = $1 AND id < $2 \
                 AND ($3 IS NULL OR name = $4) ORDER BY id DESC LIMIT $5",
            )
            .bind(user_id)
            .bind(id_key(page))
            .bind(name)
            .bind(name)
            .bind(page.limit)
            .fetch_all(pool)
            .await?)
        })
    }

    async fn get_agent(&self, user_id: &str, id: &str) -> Result<Option<AgentRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as("SELECT * FROM agents WHERE user_id = $1 AND id = $2")
                .bind(user_id)
                .bind(id)
                .fetch_optional(pool)
                .await?)
        })
    }

    async fn get_agent_by_name(&self, user_id: &str, name: &str) -> Result<Option<AgentRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as("SELECT * FROM agents WHERE user_id = $1 AND name = $2")
                .bind(user_id)
                .bind(name)
                .fetch_optional(pool)
                .await?)
        })
    }

    async fn update_agent(
        &self,
        user_id: &str,
        id: &str,
        config: &Map<String, Value>,
        at: DateTime<Utc>,
        condition: Condition<'_, AgentRow>,
    ) -> Result<Option<AgentRow>> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            // Write first, so the transaction holds the write lock from its start.
            sqlx::query("UPDATE agents SET updated_at = updated_at WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let Some(current) = sqlx::query_as::<_, AgentRow>(
                "SELECT * FROM agents WHERE user_id = $1 AND id = $2",
            )
            .bind(user_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            else {
                return Ok(None);
            };
            holds(condition, &current)?;
            let Json(current_config): Json<Map<String, Value>> =
                sqlx::query_scalar("SELECT config FROM agent_versions WHERE id = $1")
                    .bind(&current.current_version_id)
                    .fetch_one(&mut *tx)
                    .await?;
            if current_config == *config {
                return Ok(Some(current));
            }
            let version_id = ids::new(ids::Prefix::AgentVersion);
            sqlx::query(
                "INSERT INTO agent_versions (id, agent_id, version_number, config, created_at)
                 SELECT $1, $2, MAX(version_number) + 1, $3, $4 \
                 FROM agent_versions WHERE agent_id = $5",
            )
            .bind(&version_id)
            .bind(id)
            .bind(Json(config))
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let updated = sqlx::query_as(
                "UPDATE agents SET current_version_id = $1, updated_at = $2 \
                 WHERE id = $3 RETURNING *",
            )
            .bind(&version_id)
            .bind(at)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(updated))
        })
    }

    async fn delete_agent(
        &self,
        user_id: &str,
        id: &str,
        condition: Condition<'_, AgentRow>,
    ) -> Result<bool> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            lock_and_check!(
                tx,
                "UPDATE agents SET updated_at = updated_at WHERE user_id = $1 AND id = $2",
                "SELECT * FROM agents WHERE user_id = $1 AND id = $2",
                user_id,
                id,
                condition
            );
            let done = sqlx::query("DELETE FROM agents WHERE user_id = $1 AND id = $2")
                .bind(user_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(done.rows_affected() == 1)
        })
    }

    async fn list_agent_versions(
        &self,
        agent_id: &str,
        page: &Page,
    ) -> Result<Vec<AgentVersionRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT * FROM agent_versions WHERE agent_id = $1 AND version_number < $2 \
                 ORDER BY version_number DESC LIMIT $3",
            )
            .bind(agent_id)
            .bind(int_key(page))
            .bind(page.limit)
            .fetch_all(pool)
            .await?)
        })
    }

    async fn get_agent_version(
        &self,
        agent_id: &str,
        version_id: &str,
    ) -> Result<Option<AgentVersionRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as("SELECT * FROM agent_versions WHERE agent_id = $1 AND id = $2")
                .bind(agent_id)
                .bind(version_id)
                .fetch_optional(pool)
                .await?)
        })
    }

    async fn get_agent_version_by_number(
        &self,
        agent_id: &str,
        number: i64,
    ) -> Result<Option<AgentVersionRow>> {
        on_pool!(self, |pool| {
            Ok(sqlx::query_as(
                "SELECT * FROM agent_versions WHERE agent_id = $1 AND version_number = $2",
            )
            .bind(agent_id)
            .bind(number)
            .fetch_optional(pool)
            .await?)
        })
    }
}
