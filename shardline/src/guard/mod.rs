//! Who may talk to the daemon's control channels, and what they may send. Below every
//! endpoint: the operator API ([`crate::api`]), the agents' endpoint ([`crate::agent::server`])
//! and the Raft peer endpoint ([`crate::cluster::api`]) all use it.
//!
//! - [`token`]: bearer tokens compared in constant time, keyrings (several accepted tokens,
//!   for rotation) and the `Authorization` header.
//! - [`body`]: the strict JSON body: unknown fields, bad JSON and oversized bodies are
//!   refused with a JSON error, before anything acts on the request.
//! - [`agents`]: per-agent tokens, one file per backend id; an agent speaks only for its own.
//! - [`peers`]: the cluster secret every peer request carries.
//!
//! Every refusal is a [`Refusal`]: the API's error shape (`{"error": {"code", "message"}}`)
//! with a message that says what to configure or send.

pub mod agents;
pub mod body;
pub mod peers;
pub mod token;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};

pub use agents::AgentAuth;
pub use body::Strict;
pub use peers::PeerAuth;
pub use token::{bearer, Keyring, Token, TokenError};

/// A refused request: status, a stable code and what to do, answered as the API's JSON error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code scripts can match on, e.g. `bad_token`.
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
}

impl Refusal {
    /// A refusal with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401: the caller did not prove who it is.
    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Reading answers in tests.

    use axum::response::Response;

    /// The status and JSON body of `response`.
    pub async fn answer(response: Response) -> (u16, serde_json::Value) {
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("a body");
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, body)
    }
}
