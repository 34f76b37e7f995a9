//! `switchover`, `failover`, `pause`, `resume`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, SystemTime};

use tonic::transport::Channel;

use super::{authorized, output, status_error, CtlError, Format};
use crate::pb::admin as pb;
use crate::pb::admin::admin_client::AdminClient;

/// The least a call that waits for the cluster (switchover, failover,
/// `--wait`) is given, whatever `--timeout` says: a failover may first wait
/// for a dead holder's lease to run out.
pub const LONG_CALL: Duration = Duration::from_secs(60);

/// `--scheduled` as the server wants it: an RFC 3339 UTC time, given as
/// one or as `+DURATION` from now (`+10m`).
pub fn schedule(at: Option<&str>) -> Result<String, CtlError> {
    let Some(at) = at.map(str::trim).filter(|a| !a.is_empty()) else {
        return Ok(String::new());
    };
    match at.strip_prefix('+') {
        Some(d) => {
            let d = humantime::parse_duration(d).map_err(|e| {
                CtlError(format!(
                    "--scheduled {at}: {e}; give +DURATION (+10m) or an RFC 3339 UTC time"
                ))
            })?;
            Ok(crate::store::keys::format_time(SystemTime::now() + d))
        }
        None => Ok(at.to_string()),
    }
}

/// Asks `question` on a terminal; without one, refuses unless `force`.
pub fn confirm(question: &str, force: bool) -> Result<(), CtlError> {
    if force {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CtlError(
            "this asks for confirmation and no terminal is attached: pass --force".into(),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CtlError(format!("cannot read the answer: {e}")))?;
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CtlError("aborted: nothing was changed".into()))
    }
}

/// What one of these commands needs.
pub struct Call<'a> {
    pub client: &'a mut AdminClient<Channel>,
    pub endpoint: &'a str,
    pub secret: &'a Option<String>,
    pub timeout: Duration,
    pub format: Format,
}

impl Call<'_> {
    fn request<T>(&self, msg: T) -> Result<tonic::Request<T>, CtlError> {
        let mut req = authorized(msg, self.secret)?;
        req.set_timeout(self.timeout + LONG_CALL);
        Ok(req)
    }

    pub async fn switchover(
        &mut self,
        leader: Option<String>,
        candidate: Option<String>,
        scheduled: Option<String>,
        force: bool,
    ) -> Result<String, CtlError> {
        let scheduled_at = schedule(scheduled.as_deref())?;
        let to = candidate.as_deref().unwrap_or("the best healthy standby");
        let when = if scheduled_at.is_empty() {
            "now".to_string()
        } else {
            format!("at {scheduled_at}")
        };
        confirm(
            &format!("Switch over to {to} {when}? Clients of the primary are disconnected."),
            force,
        )?;
        let req = self.request(pb::SwitchoverRequest {
            leader: leader.unwrap_or_default(),
            candidate: candidate.unwrap_or_default(),
            scheduled_at,
        })?;
        let reply = self
            .client
            .switchover(req)
            .await
            .map_err(|s| status_error(self.endpoint, s))?
            .into_inner();
        Ok(output::switched(&reply, self.format))
    }

    pub async fn failover(&mut self, candidate: String, force: bool) -> Result<String, CtlError> {
        confirm(
            &format!("Fail over to {candidate}? The current primary, if any, is demoted."),
            force,
        )?;
        let req = self.request(pb::FailoverRequest { candidate })?;
        let reply = self
            .client
            .failover(req)
            .await
            .map_err(|s| status_error(self.endpoint, s))?
            .into_inner();
        Ok(output::switched(&reply, self.format))
    }

    pub async fn pause(&mut self, on: bool, wait: bool) -> Result<String, CtlError> {
        let req = self.request(pb::PauseRequest { wait })?;
        let reply = if on {
            self.client.pause(req).await
        } else {
            self.client.resume(req).await
        }
        .map_err(|s| status_error(self.endpoint, s))?
        .into_inner();
        Ok(if reply.paused {
            "Maintenance mode on: no automatic failover; pgkeel starts and stops no PostgreSQL"
        } else {
            "Maintenance mode off: automatic failover is back"
        }
        .to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_absolute_or_relative() {
        assert_eq!(schedule(None).unwrap(), "");
        assert_eq!(
            schedule(Some("2030-01-01T03:00:00Z")).unwrap(),
            "2030-01-01T03:00:00Z"
        );
        let in_ten = humantime::parse_rfc3339(&schedule(Some("+10m")).unwrap()).unwrap();
        let ahead = in_ten.duration_since(SystemTime::now()).unwrap();
        assert!(ahead > Duration::from_secs(590) && ahead <= Duration::from_secs(600));
        assert!(schedule(Some("+soon")).unwrap_err().0.contains("+DURATION"));
    }
}
