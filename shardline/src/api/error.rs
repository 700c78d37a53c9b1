//! Every error the API answers, as `{"error": {"code": "...", "message": "..."}}` with the
//! status that says who must act: 4xx the caller (nothing changed), 421/503 the cluster.

use axum::{
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};

use crate::state::{ControlError, StateError};

/// An error answer: status, a stable machine-readable code and a message for humans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code scripts can match on, e.g. `unknown_backend`.
    pub code: &'static str,
    /// What was wrong and what to do.
    pub message: String,
    /// With `not_leader`: the leader's id and API address, if known.
    pub leader: Option<(u64, String)>,
}

/// The JSON body of an error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The `error` object of an error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// With `not_leader`: where writes go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderHint>,
}

/// The leader a `not_leader` answer points at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LeaderHint {
    /// Node id.
    pub id: u64,
    /// Its API address.
    pub addr: String,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            leader: None,
        }
    }

    /// 404 for a resource that does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400 for a request the API cannot act on.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                leader: self.leader.map(|(id, addr)| LeaderHint { id, addr }),
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        let (status, code) = match &e {
            StateError::UnknownService(_) => (StatusCode::NOT_FOUND, "unknown_service"),
            StateError::UnknownBackend(_) => (StatusCode::NOT_FOUND, "unknown_backend"),
            StateError::BadBackendId(_) => (StatusCode::BAD_REQUEST, "bad_backend_id"),
            StateError::BadShardSet(_) => (StatusCode::BAD_REQUEST, "bad_shard_set"),
            StateError::StateTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "state_too_large"),
            StateError::BadBackend { .. } => (StatusCode::BAD_REQUEST, "bad_backend"),
            StateError::Takeover { .. } => (StatusCode::CONFLICT, "takeover"),
            StateError::NestedBatch => (StatusCode::BAD_REQUEST, "nested_batch"),
            StateError::OutsidePool { .. } => (StatusCode::BAD_REQUEST, "outside_pool"),
            StateError::NoPool(_) => (StatusCode::BAD_REQUEST, "no_pool"),
            StateError::NotAMember(_) => (StatusCode::CONFLICT, "not_a_member"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Rejected(e) => e.into(),
            ControlError::NotLeader { leader } => {
                let message = match &leader {
                    Some((id, addr)) => {
                        format!("this node is not the leader; send writes to node {id} at {addr}")
                    }
                    None => "this node is not the leader and no leader is known yet; retry".into(),
                };
                Self {
                    leader,
                    ..Self::new(StatusCode::MISDIRECTED_REQUEST, "not_leader", message)
                }
            }
            ControlError::Unavailable(m) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the cluster cannot commit or read now (no quorum?): {m}"),
            ),
            ControlError::Membership(m) => Self::new(StatusCode::CONFLICT, "membership", m),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let code = match &r {
            JsonRejection::JsonDataError(_) => "bad_json_data",
            JsonRejection::JsonSyntaxError(_) => "bad_json",
            JsonRejection::MissingJsonContentType(_) => "missing_content_type",
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                "body_too_large"
            }
            _ => "bad_body",
        };
        Self::new(r.status(), code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(r.status(), "bad_path", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(r.status(), "bad_query", r.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_errors_map_to_who_must_act() {
        let status = |e: ControlError| ApiError::from(e).status;
        assert_eq!(
            status(StateError::UnknownBackend(9).into()),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(StateError::BadShardSet(vec![]).into()),
            StatusCode::BAD_REQUEST
        );
        let big = StateError::StateTooLarge {
            session: "kv/1".into(),
            bytes: 5000,
            limit: 4096,
        };
        assert_eq!(status(big.into()), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            status(ControlError::Unavailable("no quorum".into())),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(ControlError::Membership("no".into())),
            StatusCode::CONFLICT
        );
        let e = ApiError::from(ControlError::NotLeader {
            leader: Some((2, "10.0.0.2:7900".into())),
        });
        assert_eq!(
            (e.status, e.code),
            (StatusCode::MISDIRECTED_REQUEST, "not_leader")
        );
        assert!(e.message.contains("10.0.0.2:7900"));
        assert_eq!(e.leader, Some((2, "10.0.0.2:7900".into())));
    }

    #[tokio::test]
    async fn the_body_is_the_json_error_shape() {
        let response = ApiError::from(ControlError::NotLeader {
            leader: Some((2, "h:1".into())),
        })
        .into_response();
        assert_eq!(response.status(), StatusCode::MISDIRECTED_REQUEST);
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body.error.code, "not_leader");
        assert_eq!(body.error.leader.unwrap().addr, "h:1");
    }
}
