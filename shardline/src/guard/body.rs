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

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Inner {
        a: u32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        list: Vec<Inner>,
    }

    #[test]
    fn unknown_fields_are_named_at_any_depth() {
        assert_eq!(
            parse::<Outer>(br#"{"inner": {"a": 1}}"#).unwrap(),
            Outer {
                inner: Inner { a: 1 },
                list: vec![]
            }
        );
        let e =
            parse::<Outer>(br#"{"inner": {"a": 1, "b": 2}, "list": [{"a": 3, "c": 4}], "d": 0}"#)
                .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (422, "unknown_field"));
        for path in ["`inner.b`", "`list.0.c`", "`d`"] {
            assert!(e.message.contains(path), "{}", e.message);
        }
        let e = parse::<Outer>(br#"{"inner": {"a": "x"}}"#).unwrap_err();
        assert_eq!(e.code, "bad_json_data");
        let e = parse::<Outer>(br#"{"inner": {"a": 1}} trailing"#).unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "bad_json"));
    }

    #[tokio::test]
    async fn oversized_and_non_json_bodies_are_refused_as_json() {
        let app = Router::new()
            .route("/", post(|Strict(o): Strict<Outer>| async move { Json(o) }))
            .layer(DefaultBodyLimit::max(64));
        let send = |body: String, json: bool| {
            let mut r = Request::post("/");
            if json {
                r = r.header(CONTENT_TYPE, "application/json");
            }
            app.clone()
                .oneshot(r.body(axum::body::Body::from(body)).unwrap())
        };
        let (status, _) = answer(send(r#"{"inner":{"a":1}}"#.into(), true).await.unwrap()).await;
        assert_eq!(status, 200);
        let big = format!(
            r#"{{"inner":{{"a":1}},"list":[{}]}}"#,
            r#"{"a":1},"#.repeat(20)
        );
        let (status, body) = answer(send(big, true).await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (413, Some("body_too_large"))
        );
        let (status, body) =
            answer(send(r#"{"inner":{"a":1}}"#.into(), false).await.unwrap()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (415, Some("missing_content_type"))
        );
    }
}
