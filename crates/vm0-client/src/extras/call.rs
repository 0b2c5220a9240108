//! Any operation by its method and path, for callers that are driven by a table of the
//! spec's operations rather than by code (the MCP tools of `vm0-mcp`), with what the
//! generated operations have: the token, the `api-version`, retries and the typed error.

use progenitor_client::ClientInfo;

use super::error::from_response;
use super::{send_with_retries, Client, Error};

impl Client {
    /// Sends `method` to `path` (such as `/v1/agents/agt_1`, already filled in and escaped)
    /// with `query`, `headers` and a JSON `body`; the JSON the API answers, or `None` for
    /// an answer without a body (a 204).
    pub async fn call_json(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(String, String)],
        headers: &[(String, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Option<serde_json::Value>, Error> {
        let url = format!("{}{path}", self.base_url());
        let mut request = self.authorize(self.http().request(method, url)).query(query);
        request = request.header("api-version", crate::RawClient::api_version());
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let settings = self.inner();
        if let Some(timeout) = settings.timeout {
            request = request.timeout(timeout);
        }
        let request = request.build().map_err(|e| Error::Invalid(e.to_string()))?;
        let response =
            send_with_retries(self.http(), request, settings.retries, settings.longest_wait)
                .await?;
        if !response.status().is_success() {
            return Err(from_response(response).await);
        }
        let bytes = response.bytes().await?;
        if bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|error| Error::Transport {
            message: format!("unreadable response ({} bytes): {error}", bytes.len()),
            request_id: None,
        })
    }
}
