//! The API's Idempotency-Keys (`vm0_api::idempotency`) kept in the store, shared by every
//! instance on the database; the answers' bodies sealed, as a new token is among them.

use base64::Engine as _;
use vm0_api::idempotency::{Begun, KeyStore, StoreFuture, StoredAnswer};
use vm0_api::ApiError;

use super::App;
use crate::store::Store;

/// How long a key stays held by a request that has not answered: past it, its instance is
/// taken to have died, and a retry runs the operation again.
const LOCK_MS: i64 = 120_000;

impl<S: Store> KeyStore for App<S> {
    fn begin<'a>(
        &'a self,
        user: &'a str,
        key: &'a str,
        fingerprint: &'a str,
    ) -> StoreFuture<'a, Result<Begun, ApiError>> {
        Box::pin(async move {
            let lifetime = self.engine.key_lifetime().as_millis() as i64;
            let held = self.store.take_key(user, key, fingerprint, LOCK_MS, lifetime).await?;
            let Some(held) = held else { return Ok(Begun::Fresh) };
            if held.fingerprint != fingerprint {
                return Ok(Begun::Reused);
            }
            let (Some(status), Some(headers), Some(body)) = (held.status, held.headers, held.body)
            else {
                return Ok(Begun::InUse);
            };
            let body = self
                .engine
                .sealer()
                .unseal(&body)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .ok_or_else(|| ApiError::internal("a kept answer does not unseal"))?;
            let headers = serde_json::from_str(&headers)
                .map_err(|e| ApiError::internal(format!("a kept answer's headers: {e}")))?;
            Ok(Begun::Answered(StoredAnswer { status: status as u16, headers, body }))
        })
    }

    fn finish<'a>(
        &'a self,
        user: &'a str,
        key: &'a str,
        fingerprint: &'a str,
        answer: StoredAnswer,
    ) -> StoreFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let headers = serde_json::to_string(&answer.headers).expect("headers serialize");
            let body = base64::engine::general_purpose::STANDARD.encode(&answer.body);
            let body = self.engine.sealer().seal(&body);
            let kept = (i64::from(answer.status), headers.as_str(), body.as_str());
            Ok(self.store.keep_answer(user, key, fingerprint, kept).await?)
        })
    }

    fn release<'a>(
        &'a self,
        user: &'a str,
        key: &'a str,
        fingerprint: &'a str,
    ) -> StoreFuture<'a, Result<(), ApiError>> {
        Box::pin(async move { Ok(self.store.free_key(user, key, fingerprint).await?) })
    }
}
