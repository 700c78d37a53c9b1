//! `/v1/sessions`: placements and metadata from the control state joined with the control
//! loop's insights (shards, rate, forecast, history, re-shard events), manual re-shards, and
//! each session's critical state.

use std::collections::BTreeMap;

use axum::{
    extract::{Query, State},
    http::StatusCode,
    Json,
};
use serde::{Deserialize, Serialize};

use super::owners::{owners_of, Owners};
use super::{ApiError, ApiState, Authorized, Body, Param, QueryParams};
use crate::{
    control::insight::{ReshardEvent, Sample, SessionInsight},
    state::{Command, ControlState, Response, SessionEntry, SessionMeta, SessionRef, StateError},
};

pub use shardline_wire::bodies::{Placement, StateValue};

/// A session in the list.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    /// Service name.
    pub service: String,
    /// Session number.
    pub session: u64,
    /// Its shard set (empty: the default table routes it).
    pub backends: Vec<u32>,
    /// Placement generation.
    pub generation: u64,
    /// Class and labels.
    pub meta: SessionMeta,
    /// What the control loop knows, without history and with the last re-shard event only
    /// (absent until it has seen the session).
    pub insight: Option<SessionInsight>,
}

/// One session in full.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SessionDetail {
    /// Placement, metadata and the current insight.
    #[serde(flatten)]
    pub view: SessionView,
    /// Samples, oldest first: actual load, forecast and upper bound per tick.
    pub history: Vec<Sample>,
    /// Shard-count changes, oldest first.
    pub events: Vec<ReshardEvent>,
    /// Critical-state keys and their sizes (values need the token).
    pub state_keys: BTreeMap<String, usize>,
}

/// An insight as lists show it: no history, the last re-shard event only.
fn summary(i: &SessionInsight) -> SessionInsight {
    SessionInsight {
        history: Vec::new(),
        events: i.events.last().cloned().into_iter().collect(),
        ..i.clone()
    }
}

fn session_view(
    r: &SessionRef,
    entry: Option<&SessionEntry>,
    insight: Option<&SessionInsight>,
) -> SessionView {
    let entry = entry.cloned().unwrap_or_default();
    SessionView {
        service: r.service.to_string(),
        session: r.session,
        backends: entry.backends.to_vec(),
        generation: entry.generation,
        meta: (*entry.meta).clone(),
        insight: insight.map(summary),
    }
}

fn known_service(state: &ControlState, r: &SessionRef) -> Result<(), ApiError> {
    match state.service_id(&r.service) {
        Some(_) => Ok(()),
        None => Err(StateError::UnknownService(r.service.to_string()).into()),
    }
}

/// Query of `GET /v1/sessions`: every condition given must hold.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SessionFilter {
    /// Only this service's sessions.
    service: Option<String>,
    /// Only sessions of this class.
    class: Option<String>,
    /// Only sessions carrying every one of these labels: `name=value` pairs, comma separated.
    label: Option<String>,
}

impl SessionFilter {
    /// The `label` pairs, or the error to answer for a malformed one.
    fn labels(&self) -> Result<Vec<(&str, &str)>, ApiError> {
        let Some(text) = &self.label else {
            return Ok(Vec::new());
        };
        text.split(',')
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) if !name.is_empty() => Ok((name, value)),
                _ => Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_label",
                    format!("label {pair:?} is not NAME=VALUE (several: comma separated)"),
                )),
            })
            .collect()
    }

    fn admits(&self, view: &SessionView, labels: &[(&str, &str)]) -> bool {
        self.service.as_ref().is_none_or(|s| *s == view.service)
            && self
                .class
                .as_ref()
                .is_none_or(|c| view.meta.class.as_ref() == Some(c))
            && labels
                .iter()
                .all(|(n, v)| view.meta.labels.get(*n).is_some_and(|x| x == v))
    }
}

pub(super) async fn list(
    State(api): State<ApiState>,
    QueryParams(filter): QueryParams<SessionFilter>,
) -> Result<Json<Vec<SessionView>>, ApiError> {
    let labels = filter.labels()?;
    let state = api.control.local();
    let mut insights: BTreeMap<SessionRef, SessionInsight> = api
        .insights
        .summaries()
        .into_iter()
        .map(|i| (i.session.clone(), i))
        .collect();
    let mut out: Vec<SessionView> = state
        .sessions
        .iter()
        .map(|(r, e)| session_view(r, Some(e), insights.remove(r).as_ref()))
        .collect();
    out.extend(insights.iter().map(|(r, i)| session_view(r, None, Some(i))));
    out.retain(|v| filter.admits(v, &labels));
    out.sort_by(|a, b| (&a.service, a.session).cmp(&(&b.service, b.session)));
    Ok(Json(out))
}

pub(super) async fn show(
    State(api): State<ApiState>,
    Param((service, session)): Param<(String, u64)>,
) -> Result<Json<SessionDetail>, ApiError> {
    let r = SessionRef {
        service: service.into(),
        session,
    };
    let state = api.control.local();
    known_service(&state, &r)?;
    let entry = state.sessions.get(&r);
    let insight = api.insights.session(&r);
    let keys: BTreeMap<String, usize> = state
        .kv
        .get(&r)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.len())).collect())
        .unwrap_or_default();
    if entry.is_none() && insight.is_none() && keys.is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_session",
            format!("no placement, metadata, state or forecast for session {r}"),
        ));
    }
    let view = session_view(&r, entry, insight.as_ref());
    let (history, events) = insight.map(|i| (i.history, i.events)).unwrap_or_default();
    Ok(Json(SessionDetail {
        view,
        history,
        events,
        state_keys: keys,
    }))
}

async fn write(api: &ApiState, command: Command) -> Result<Json<Response>, ApiError> {
    Ok(Json(api.control.write(command).await?))
}

pub(super) async fn place(
    _: Authorized,
    State(api): State<ApiState>,
    Param((service, session)): Param<(String, u64)>,
    Body(Placement { backends }): Body<Placement>,
) -> Result<Json<Response>, ApiError> {
    let session = SessionRef {
        service: service.into(),
        session,
    };
    write(&api, Command::Place { session, backends }).await
}

pub(super) async fn unplace(
    _: Authorized,
    State(api): State<ApiState>,
    Param((service, session)): Param<(String, u64)>,
) -> Result<Json<Response>, ApiError> {
    let session = SessionRef {
        service: service.into(),
        session,
    };
    write(&api, Command::Unplace { session }).await
}

pub(super) async fn set_meta(
    _: Authorized,
    State(api): State<ApiState>,
    Param((service, session)): Param<(String, u64)>,
    Body(meta): Body<SessionMeta>,
) -> Result<Json<Response>, ApiError> {
    let session = SessionRef {
        service: service.into(),
        session,
    };
    write(&api, Command::SetMeta { session, meta }).await
}

pub(super) async fn get_state(
    _: Authorized,
    State(api): State<ApiState>,
    Param((service, session, key)): Param<(String, u64, String)>,
) -> Result<Json<StateValue>, ApiError> {
    let r = SessionRef {
        service: service.into(),
        session,
    };
    // Linearizable: applications read back what they wrote, from any node.
    let state = api.control.read().await?;
    known_service(&state, &r)?;
    let value = state.kv.get(&r).and_then(|m| m.get(&key)).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_key",
            format!("session {r} has no state key {key:?}"),
        )
    })?;
    Ok(Json(StateValue {
        key: Some(key),
        value: String::from_utf8(value.clone()).ok(),
        hex: Some(to_hex(value)),
    }))
}

pub(super) async fn put_state(
    _: Authorized,
    State(api): State<ApiState>,
    Param((service, session, key)): Param<(String, u64, String)>,
    Body(body): Body<StateValue>,
) -> Result<Json<Response>, ApiError> {
    let value = match (body.value, body.hex) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(hex)) => from_hex(&hex).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "bad_hex",
                "`hex` must be an even number of hex digits",
            )
        })?,
        _ => {
            return Err(ApiError::new(
                axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                "bad_state_value",
                "give exactly one of `value` (text) or `hex` (bytes)",
            ))
        }
    };
    let session = SessionRef {
        service: service.into(),
        session,
    };
    write(
        &api,
        Command::PutState {
            session,
            key,
            value,
        },
    )
    .await
}

pub(super) async fn delete_state(
    _: Authorized,
    State(api): State<ApiState>,
    Param((service, session, key)): Param<(String, u64, String)>,
) -> Result<Json<Response>, ApiError> {
    let session = SessionRef {
        service: service.into(),
        session,
    };
    known_service(&api.control.local(), &session)?;
    write(&api, Command::DeleteState { session, key }).await
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string, or `None` if it is not an even number of hex digits.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Query of `GET .../owners`.
#[derive(Debug, Deserialize)]
pub(super) struct OwnersQuery {
    key: Option<String>,
}

pub(super) async fn owners(
    State(api): State<ApiState>,
    Param((service, session)): Param<(String, u64)>,
    Query(query): Query<OwnersQuery>,
) -> Result<Json<Owners>, ApiError> {
    let key = query.key.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_key",
            "pass the request key as ?key=K (an unsigned 64-bit integer)",
        )
    })?;
    let key: u64 = key.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_key",
            format!("key {key:?} is not an unsigned 64-bit integer"),
        )
    })?;
    let r = SessionRef {
        service: service.into(),
        session,
    };
    let state = api.control.local();
    known_service(&state, &r)?;
    Ok(Json(owners_of(
        &state,
        &r,
        key,
        &api.handoffs,
        std::time::Instant::now(),
    )))
}
