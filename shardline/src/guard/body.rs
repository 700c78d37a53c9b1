//! The strict JSON body: [`shardline_wire::strict::decode`] (any field the type does not take
//! is refused, naming it) behind a content-type check. The size limit is the router's
//! `DefaultBodyLimit`; past it the answer is 413.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{header::CONTENT_TYPE, StatusCode},
};
use serde::de::DeserializeOwned;
use shardline_wire::strict::{decode, BodyError};

use super::Refusal;

/// A JSON body of type `T`, refused with a [`Refusal`] if it is not exactly one.
pub struct Strict<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Strict<T> {
    type Rejection = Refusal;

    async fn from_request(req: Request, state: &S) -> Result<Self, Refusal> {
        let json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json {
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "missing_content_type",
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Refusal::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "the request body is over this endpoint's size limit",
                )
            } else {
                Refusal::new(r.status(), "bad_body", r.body_text())
            }
        })?;
        parse(&bytes).map(Self)
    }
}

/// `bytes` as one JSON `T` with no field `T` does not take ([`shardline_wire::strict`]), or
/// the refusal to answer.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Refusal> {
    decode(bytes).map_err(|e| {
        let (status, code) = match &e {
            BodyError::Syntax(_) => (StatusCode::BAD_REQUEST, "bad_json"),
            BodyError::Shape(_) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_json_data"),
            BodyError::UnknownFields(_) => (StatusCode::UNPROCESSABLE_ENTITY, "unknown_field"),
        };
        Refusal::new(status, code, e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use axum::{extract::DefaultBodyLimit, routing::post, Json, Router};
    use serde::{Deserialize, Serialize};
    use tower::ServiceExt;

    use super::*;
    use crate::guard::testing::answer;

    /// A body with a list, so a big one is easy to make.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Weights {
        weights: Vec<u32>,
    }

    /// Each decoding error (tested in `shardline_wire::strict`) becomes its own status and
    /// code, with the decoder's message.
    #[test]
    fn each_decoding_error_is_refused_with_its_status_and_code() {
        assert_eq!(
            parse::<Weights>(br#"{"weights": [1]}"#).unwrap(),
            Weights { weights: vec![1] }
        );
        for (body, status, code) in [
            (&br#"{"weights": [1]} trailing"#[..], 400, "bad_json"),
            (br#"{"weights": "x"}"#, 422, "bad_json_data"),
            (br#"{"weights": [], "extra": 1}"#, 422, "unknown_field"),
        ] {
            let e = parse::<Weights>(body).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (status, code), "{}", e.message);
            let decoded = decode::<Weights>(body).unwrap_err().to_string();
            assert_eq!(e.message, decoded);
        }
    }

    #[tokio::test]
    async fn oversized_and_non_json_bodies_are_refused_as_json() {
        let app = Router::new()
            .route(
                "/",
                post(|Strict(w): Strict<Weights>| async move { Json(w) }),
            )
            .layer(DefaultBodyLimit::max(64));
        let send = |body: String, json: bool| {
            let mut r = Request::post("/");
            if json {
                r = r.header(CONTENT_TYPE, "application/json");
            }
            app.clone()
                .oneshot(r.body(axum::body::Body::from(body)).unwrap())
        };
        let (status, _) = answer(send(r#"{"weights":[1]}"#.into(), true).await.unwrap()).await;
        assert_eq!(status, 200);
        let big = format!(r#"{{"weights":[{}1]}}"#, "1,".repeat(40));
        let (status, body) = answer(send(big, true).await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (413, Some("body_too_large"))
        );
        let (status, body) = answer(send(r#"{"weights":[1]}"#.into(), false).await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (415, Some("missing_content_type"))
        );
    }
}
