//! `POST /switchover`, `DELETE /switchover` and `POST /failover`: the same
//! path as `pgkeelctl` ([`crate::admin::switchover`]), with Patroni's
//! bodies (`{"leader", "candidate", "scheduled_at"}`, `{"candidate"}`) and
//! status codes: 200 done, 202 scheduled, 400 a bad body or time, 404 an
//! unknown member, 412 a refused precondition, 503 failed or not finished.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use tonic::{Code, Status};

use super::auth::Authorized;
use super::operations::{body, say};
use super::RestState;
use crate::admin::{operations as ops, switchover as sw};
use crate::pb::admin as pb;

/// How long a call waits for the new primary.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct SwitchoverBody {
    leader: Option<String>,
    candidate: Option<String>,
    scheduled_at: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FailoverBody {
    candidate: Option<String>,
    /// Patroni accepts (and checks) the leader in a failover too.
    leader: Option<String>,
}

/// Patroni's codes for an admin status.
fn refused(s: Status) -> Response {
    let code = match s.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition | Code::Aborted => StatusCode::PRECONDITION_FAILED,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    say(code, s.message())
}

fn answered(r: Result<pb::SwitchoverReply, Status>) -> Response {
    match r {
        Ok(r) if r.scheduled => say(
            StatusCode::ACCEPTED,
            format!("{} ({})", r.message, r.operation_id),
        ),
        Ok(r) => say(
            StatusCode::OK,
            format!("{} ({})", r.message, r.operation_id),
        ),
        Err(e) => refused(e),
    }
}

/// `POST /switchover`.
pub async fn switchover(_: Authorized, State(s): State<Arc<RestState>>, b: Bytes) -> Response {
    let b: SwitchoverBody = match body(&b) {
        Ok(b) => b,
        Err(e) => return say(StatusCode::BAD_REQUEST, e),
    };
    let req = pb::SwitchoverRequest {
        leader: b.leader.unwrap_or_default(),
        candidate: b.candidate.unwrap_or_default(),
        scheduled_at: b.scheduled_at.unwrap_or_default(),
    };
    answered(sw::switchover(s.cluster.kv(), req, WAIT).await)
}

/// `DELETE /switchover`: cancels the scheduled switchover.
pub async fn cancel(_: Authorized, State(s): State<Arc<RestState>>) -> Response {
    match ops::cancel_switchover(s.cluster.kv()).await {
        Ok(id) => say(StatusCode::OK, format!("scheduled switchover {id} deleted")),
        Err(e) if e.code() == Code::FailedPrecondition => say(StatusCode::NOT_FOUND, e.message()),
        Err(e) => refused(e),
    }
}

/// `POST /failover`.
pub async fn failover(_: Authorized, State(s): State<Arc<RestState>>, b: Bytes) -> Response {
    let b: FailoverBody = match body(&b) {
        Ok(b) => b,
        Err(e) => return say(StatusCode::BAD_REQUEST, e),
    };
    let kv = s.cluster.kv();
    if let Some(leader) = b.leader.filter(|l| !l.is_empty()) {
        // Patroni's failover with a leader is a switchover from it.
        let req = pb::SwitchoverRequest {
            leader,
            candidate: b.candidate.unwrap_or_default(),
            scheduled_at: String::new(),
        };
        return answered(sw::switchover(kv, req, WAIT).await);
    }
    answered(sw::failover(kv, b.candidate.unwrap_or_default(), WAIT).await)
}
