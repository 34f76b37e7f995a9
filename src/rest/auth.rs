//! Who may make unsafe calls: HTTP basic auth with
//! `restapi.authentication`, or `Authorization: Bearer <restapi.token>`.
//! An [`Authorized`] argument makes a handler refuse everyone else with
//! 401 before it reads the body, so nothing changes.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::RestState;
use crate::config::RestApiConfig;

/// The credentials unsafe calls must present.
#[derive(Clone, Default)]
pub struct Credentials {
    basic: Option<(String, String)>,
    token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("basic_user", &self.basic.as_ref().map(|(u, _)| u))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Credentials {
    /// From `restapi.authentication` and `restapi.token`/`token_file`.
    pub fn from_config(c: &RestApiConfig) -> Self {
        Credentials {
            basic: c
                .authentication
                .as_ref()
                .map(|a| (a.username.clone(), a.password.expose().to_string())),
            token: c.token().map(str::to_string),
        }
    }

    /// Basic-auth user and password and/or a bearer token.
    pub fn new(basic: Option<(&str, &str)>, token: Option<&str>) -> Self {
        Credentials {
            basic: basic.map(|(u, p)| (u.to_string(), p.to_string())),
            token: token.map(str::to_string),
        }
    }

    /// Checks an `Authorization` header value.
    fn admits(&self, header: &str) -> bool {
        if let Some(presented) = header.strip_prefix("Bearer ") {
            return self
                .token
                .as_deref()
                .is_some_and(|t| same(t.as_bytes(), presented.trim().as_bytes()));
        }
        let Some(encoded) = header.strip_prefix("Basic ") else {
            return false;
        };
        let Some((user, password)) = self.basic.as_ref() else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let expected = format!("{user}:{password}");
        same(expected.as_bytes(), &decoded)
    }
}

/// Comparison whose time does not depend on where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Proof that the request carried valid credentials.
pub struct Authorized;

impl FromRequestParts<Arc<RestState>> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<RestState>,
    ) -> Result<Self, Self::Rejection> {
        let creds = &state.credentials;
        if creds.basic.is_none() && creds.token.is_none() {
            return Err((
                StatusCode::FORBIDDEN,
                "unsafe REST calls are disabled on this node: set restapi.authentication or restapi.token in its config file\n",
            )
                .into_response());
        }
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let sentence = match header {
            Some(h) if creds.admits(h) => return Ok(Authorized),
            Some(_) => "wrong credentials: pass restapi.authentication's user and password (basic auth) or restapi.token as a bearer token\n",
            None => "this call changes the cluster and needs credentials: basic auth with restapi.authentication, or a bearer token with restapi.token\n",
        };
        Err((
            StatusCode::UNAUTHORIZED,
            [(WWW_AUTHENTICATE, "Basic realm=\"pgkeel\"")],
            sentence,
        )
            .into_response())
    }
}
