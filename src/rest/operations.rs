//! `POST /restart`, `DELETE /restart`, `POST /reload` and
//! `POST /reinitialize`: the member operations of the node that serves the
//! call, through the same path as `pgkeelctl` ([`crate::admin::operations`]).
//! Bodies as Patroni's: `{"schedule", "restart_pending", "role",
//! "timeout"}` for a restart, `{"force"}` for a reinitialize.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tonic::{Code, Status};

use super::auth::Authorized;
use super::RestState;
use crate::admin::operations::{self as ops, Members, OpRequest};
use crate::store::keys::{op_kind, op_state, OperationRecord};

/// How long a restart or reload call waits for its outcome by default.
const WAIT: Duration = Duration::from_secs(60);
/// How long a reinitialize call waits for the member to start it.
const START_WAIT: Duration = Duration::from_secs(30);

pub(super) fn say(code: StatusCode, sentence: impl Into<String>) -> Response {
    let mut s = sentence.into();
    s.push('\n');
    (code, s).into_response()
}

/// The HTTP answer for an admin status.
fn refused(s: Status) -> Response {
    let code = match s.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    say(code, s.message())
}

/// The body as `T`; empty means all defaults. `Err` is the sentence of
/// a 400.
pub(super) fn body<T: for<'de> Deserialize<'de> + Default>(b: &Bytes) -> Result<T, String> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b)
        .map_err(|e| format!("the request body is not readable ({e}); send a JSON object"))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RestartBody {
    schedule: Option<String>,
    restart_pending: bool,
    role: Option<String>,
    /// Seconds to wait for the outcome.
    timeout: Option<f64>,
    /// Accepted for Patroni compatibility; pgkeel restarts whatever version
    /// it finds.
    postgres_version: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ReinitBody {
    force: bool,
}

/// Writes `req` for this node and, unless scheduled, waits for its end.
async fn run(s: &RestState, req: OpRequest, wait: Duration) -> Result<OperationRecord, Status> {
    let kv = s.cluster.kv();
    let members = Members::read(kv).await?;
    members.check(&s.info.name)?;
    let name = [s.info.name.clone()];
    let mut recs = ops::run_each(kv, &members, &name, &req, wait).await?;
    recs.pop()
        .ok_or_else(|| Status::internal("no operation was written"))
}

/// `POST /restart`.
pub async fn restart(_: Authorized, State(s): State<Arc<RestState>>, b: Bytes) -> Response {
    let b: RestartBody = match body(&b) {
        Ok(b) => b,
        Err(e) => return say(StatusCode::BAD_REQUEST, e),
    };
    let checked = (|| {
        let role = ops::check_role(b.role.as_deref().unwrap_or_default())?;
        let at = ops::check_schedule(b.schedule.as_deref().unwrap_or_default(), SystemTime::now())?;
        let wait = match b.timeout {
            None => WAIT,
            Some(t) => Duration::try_from_secs_f64(t).map_err(|_| {
                Status::invalid_argument(format!("timeout {t} is not a number of seconds"))
            })?,
        };
        Ok::<_, Status>((role, at, wait))
    })();
    let (role, scheduled_at, wait) = match checked {
        Ok(c) => c,
        Err(e) => return refused(e),
    };
    let _ = b.postgres_version;
    let req = OpRequest {
        kind: op_kind::RESTART,
        pending_only: b.restart_pending,
        role,
        force: false,
        scheduled_at,
    };
    match run(&s, req, wait).await {
        Ok(r) if r.state == op_state::PENDING => say(
            StatusCode::ACCEPTED,
            format!(
                "restart scheduled for {} (operation {})",
                r.scheduled_at.unwrap_or_default(),
                r.id
            ),
        ),
        Ok(r) => say(
            StatusCode::OK,
            format!("{} (operation {})", r.message, r.id),
        ),
        Err(e) => refused(e),
    }
}

/// `DELETE /restart`: cancels this node's scheduled restart.
pub async fn cancel_restart(_: Authorized, State(s): State<Arc<RestState>>) -> Response {
    match ops::cancel_restart(s.cluster.kv(), &s.info.name).await {
        Ok(id) => say(StatusCode::OK, format!("scheduled restart {id} deleted")),
        Err(e) if e.code() == Code::FailedPrecondition => say(StatusCode::NOT_FOUND, e.message()),
        Err(e) => refused(e),
    }
}

/// `POST /reload`.
pub async fn reload(_: Authorized, State(s): State<Arc<RestState>>) -> Response {
    let req = OpRequest {
        kind: op_kind::RELOAD,
        ..Default::default()
    };
    match run(&s, req, WAIT).await {
        Ok(r) => say(
            StatusCode::OK,
            format!("{} (operation {})", r.message, r.id),
        ),
        Err(e) => refused(e),
    }
}

/// `POST /reinitialize`: answers once this node has started (a clone
/// takes a while; follow it with `pgkeelctl watch ID`).
pub async fn reinitialize(_: Authorized, State(s): State<Arc<RestState>>, b: Bytes) -> Response {
    let b: ReinitBody = match body(&b) {
        Ok(b) => b,
        Err(e) => return say(StatusCode::BAD_REQUEST, e),
    };
    let kv = s.cluster.kv();
    let written = async {
        let members = Members::read(kv).await?;
        members.check(&s.info.name)?;
        let req = OpRequest {
            kind: op_kind::REINITIALIZE,
            force: b.force,
            ..Default::default()
        };
        ops::submit(kv, &members, &s.info.name, &req, SystemTime::now()).await
    }
    .await;
    let rec = match written {
        Ok(r) => r,
        Err(e) => return refused(e),
    };
    let mut seen: Option<Result<ops::Progress, Status>> = None;
    let deadline = tokio::time::Instant::now() + START_WAIT;
    ops::follow(kv, &rec.id, deadline, |p| {
        let started = p
            .as_ref()
            .map_or(true, |p| p.fields.state != op_state::PENDING);
        seen = Some(p);
        !started
    })
    .await;
    match seen {
        Some(Ok(p)) if p.fields.state == op_state::FAILED => say(
            StatusCode::CONFLICT,
            format!("reinitialize on {}: {}", p.member, p.fields.message),
        ),
        Some(Ok(p)) => say(
            StatusCode::OK,
            format!(
                "reinitialize started: {} (operation {})",
                p.fields.message, rec.id
            ),
        ),
        Some(Err(e)) => refused(e),
        None => refused(Status::unavailable("no answer from the store")),
    }
}
