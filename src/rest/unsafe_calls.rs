//! The unsafe calls (POST/PATCH/PUT/DELETE), each behind [`Authorized`].
//!
//! Real today: `PATCH /config` (a JSON merge patch, compare-and-set on the
//! key's revision) and `PUT /config` (a full rewrite); both validate the
//! result like `bootstrap.dcs` before writing, and every node's agent
//! follows the `config` key. Restart, reload and reinitialize are in
//! `operations.rs`, switchover and failover in `switchover.rs`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::auth::Authorized;
use super::operations::say;
use super::RestState;
use crate::config::DcsConfig;
use crate::consensus::types::Expect;
use crate::store::keys;

/// RFC 7386: objects merge key by key, `null` removes, anything else
/// replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The body as JSON, or the sentence of a 400.
fn parse_body(body: &Bytes) -> Result<Value, String> {
    serde_json::from_slice(body)
        .map_err(|e| format!("the request body is not JSON ({e}); send a JSON object"))
}

/// Checks a candidate config like `bootstrap.dcs` and encodes it; the
/// error is the sentence of a 400.
fn validated(state: &RestState, value: Value) -> Result<(String, DcsConfig), String> {
    let dcs: DcsConfig = serde_json::from_value(value)
        .map_err(|e| format!("the new dynamic config is not valid: {e}; fix that key and retry"))?;
    let problems = dcs.validate(state.info.election_timeout_max);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(format!(
            "the new dynamic config is refused: {}",
            list.join("; ")
        ));
    }
    Ok((keys::encode(&dcs), dcs))
}

/// `PATCH /config`.
pub async fn patch_config(_: Authorized, State(s): State<Arc<RestState>>, body: Bytes) -> Response {
    let patch = match parse_body(&body) {
        Ok(p) => p,
        Err(e) => return say(StatusCode::BAD_REQUEST, e),
    };
    let current = match s.cluster.range(keys::CONFIG).await {
        Ok(kvs) => kvs.into_iter().find(|kv| kv.key == keys::CONFIG),
        Err(e) => {
            return say(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read the dynamic config: {e}"),
            )
        }
    };
    let Some(current) = current else {
        return say(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster has no dynamic config yet to patch: wait for the first node to bootstrap, or PUT a whole config",
        );
    };
    let mut merged: Value = match serde_json::from_str(&current.value) {
        Ok(v) => v,
        Err(_) => Value::Object(serde_json::Map::new()),
    };
    merge_patch(&mut merged, &patch);
    write(&s, merged, Expect::ModRevision(current.mod_revision)).await
}

/// `PUT /config`: replaces the whole dynamic config (missing keys take
/// their defaults).
pub async fn put_config(_: Authorized, State(s): State<Arc<RestState>>, body: Bytes) -> Response {
    match parse_body(&body) {
        Ok(v) => write(&s, v, Expect::Any).await,
        Err(e) => say(StatusCode::BAD_REQUEST, e),
    }
}

async fn write(s: &RestState, value: Value, expect: Expect) -> Response {
    let (encoded, dcs) = match validated(s, value) {
        Ok(v) => v,
        Err(e) => return say(StatusCode::BAD_REQUEST, e),
    };
    match s.cluster.put(keys::CONFIG, encoded, expect).await {
        Ok(Ok(_)) => Json(dcs).into_response(),
        Ok(Err(_)) => say(
            StatusCode::CONFLICT,
            "the dynamic config changed while this patch was applied; read it again and retry",
        ),
        Err(e) => say(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot write the dynamic config: {e}"),
        ),
    }
}
