//! The unsafe calls (POST/PATCH/PUT/DELETE), each behind [`Authorized`].
//!
//! Real today: `PATCH /config` (a JSON merge patch, compare-and-set on the
//! key's revision, or on `If-Match`) and `PUT /config` (a full rewrite);
//! both go through [`config_edit::edit`], the same code as the admin
//! service's `EditConfig`, and every node's agent follows the `config` key.
//! Restart, reload and reinitialize are in `operations.rs`, switchover and
//! failover in `switchover.rs`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::{ETAG, IF_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::future::BoxFuture;
use serde_json::Value;

use super::auth::Authorized;
use super::operations::say;
use super::{ClusterSource, RestState};
use crate::consensus::types::{Expect, KeyValue};
use crate::store::config_edit::{self, Change, ConfigAccess, EditError};
use crate::store::keys;

/// The body as JSON, or the sentence of a 400.
fn parse_body(body: &Bytes) -> Result<Value, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("the request body is not JSON ({e}); send a JSON object"))
}

/// The revision an `If-Match` header names (`"12"`, `12` or `W/"12"`, as
/// `GET /config`'s `ETag` gives it); `Err` is the sentence of a 400.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let Some(v) = headers.get(IF_MATCH) else {
        return Ok(None);
    };
    let text = v.to_str().unwrap_or("").trim();
    let bare = text.trim_start_matches("W/").trim_matches('"');
    bare.parse().map(Some).map_err(|_| {
        format!("If-Match {text:?} is not a config revision; send the ETag GET /config returned")
    })
}

/// `PATCH /config`: a JSON merge patch, compare-and-set on the revision
/// it read, or on `If-Match` when given (412 when the key moved on).
pub async fn patch_config(
    _: Authorized,
    State(s): State<Arc<RestState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    config_request(&s, &headers, &body, Change::Patch).await
}

/// `PUT /config`: replaces the whole dynamic config (missing keys take
/// their defaults); `If-Match` as for PATCH.
pub async fn put_config(
    _: Authorized,
    State(s): State<Arc<RestState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    config_request(&s, &headers, &body, Change::Replace).await
}

async fn config_request(
    s: &RestState,
    headers: &HeaderMap,
    body: &Bytes,
    change: fn(Value) -> Change,
) -> Response {
    let expected = match if_match(headers) {
        Ok(e) => e,
        Err(e) => return say(StatusCode::BAD_REQUEST, e),
    };
    match parse_body(body) {
        Ok(v) => write(s, change(v), expected).await,
        Err(e) => say(StatusCode::BAD_REQUEST, e),
    }
}

/// The REST API's store access, for the shared edit.
struct Source<'a>(&'a dyn ClusterSource);

impl ConfigAccess for Source<'_> {
    fn read_config(&self) -> BoxFuture<'_, Result<Option<KeyValue>, String>> {
        Box::pin(async move {
            let kvs = self.0.range(keys::CONFIG).await?;
            Ok(kvs.into_iter().find(|kv| kv.key == keys::CONFIG))
        })
    }

    fn write_config(
        &self,
        value: String,
        expect: Expect,
    ) -> BoxFuture<'_, Result<Result<u64, Option<KeyValue>>, String>> {
        self.0.put(keys::CONFIG, value, expect)
    }

    fn shortest_lease_ttl(&self) -> Option<std::time::Duration> {
        self.0.shortest_lease_ttl()
    }
}

async fn write(s: &RestState, change: Change, expected: Option<u64>) -> Response {
    let source = Source(s.cluster.as_ref());
    match config_edit::edit(&source, change, expected, s.info.election_timeout_max).await {
        Ok(edited) => {
            let mut r = Json(edited.config).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", edited.revision)) {
                r.headers_mut().insert(ETAG, v);
            }
            r
        }
        Err(e) => {
            let code = match e {
                EditError::Invalid(_) => StatusCode::BAD_REQUEST,
                EditError::Stale { .. } => StatusCode::PRECONDITION_FAILED,
                EditError::Raced => StatusCode::CONFLICT,
                EditError::Missing | EditError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            say(code, e.to_string())
        }
    }
}
