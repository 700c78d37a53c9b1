//! The OpenAPI 3.1 description served at `/v1/openapi.json`, built from the route table so
//! that every route is described (and nothing else is).

use axum::Json;
use serde_json::{json, Map, Value};

use super::{routes, QUERY_PARAMS};

/// The JSON bodies routes take, by the name [`super::Route::body`] gives.
fn schemas() -> Value {
    let id = json!({"type": "integer", "minimum": 0});
    json!({
        "Backend": {
            "type": "object", "required": ["id", "mac"], "additionalProperties": false,
            "properties": {
                "id": {"type": "integer", "minimum": 0, "maximum": 4095},
                "ipv4": {"type": "string", "format": "ipv4"},
                "ipv6": {"type": "string", "format": "ipv6"},
                "mac": {"type": "string", "example": "02:00:00:00:00:11"},
                "weight": {"type": "integer", "minimum": 0, "default": 1}
            }
        },
        "Weight": {
            "type": "object", "required": ["weight"], "additionalProperties": false,
            "properties": {"weight": {"type": "integer", "minimum": 0}}
        },
        "PoolWeight": {
            "type": "object", "additionalProperties": false,
            "description": "The backend's weight in this service's ring; absent: its own weight. 0 drains it from this service only.",
            "properties": {"weight": {"type": ["integer", "null"], "minimum": 0}}
        },
        "Placement": {
            "type": "object", "required": ["backends"], "additionalProperties": false,
            "properties": {"backends": {"type": "array", "items": id, "minItems": 1, "maxItems": 16}}
        },
        "SessionMeta": {
            "type": "object",
            "properties": {
                "class": {"type": ["string", "null"]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}}
            }
        },
        "StateValue": {
            "type": "object", "additionalProperties": false,
            "description": "Exactly one of value (UTF-8 text) or hex (bytes).",
            "properties": {"value": {"type": "string"}, "hex": {"type": "string", "pattern": "^([0-9a-fA-F]{2})*$"}}
        },
        "Member": {
            "type": "object", "required": ["id", "addr"], "additionalProperties": false,
            "properties": {"id": {"type": "integer", "minimum": 0}, "addr": {"type": "string", "example": "10.0.0.2:7901"}, "voter": {"type": "boolean", "default": true, "description": "false: stays a learner (applies the committed state, never votes)"}}
        },
        "Error": {
            "type": "object", "required": ["error"],
            "properties": {"error": {
                "type": "object", "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "leader": {"type": "object", "properties": {"id": {"type": "integer"}, "addr": {"type": "string"}}}
                }
            }}
        }
    })
}

/// The whole description.
pub fn document() -> Value {
    let error = json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    let mut paths = Map::new();
    for r in routes() {
        let parameters: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .chain(
                QUERY_PARAMS
                    .iter()
                    .filter(|(path, _, _)| *path == r.path)
                    .map(|(_, name, about)| json!({"name": name, "in": "query", "required": true, "description": about, "schema": {"type": "string"}})),
            )
            .collect();
        let mut op = json!({
            "summary": r.summary,
            "parameters": parameters,
            "responses": {"2XX": {"description": "success (JSON; /metrics: OpenMetrics text)"}, "4XX": error, "5XX": error},
        });
        if r.guarded {
            op["security"] = json!([{"bearer": []}]);
            op["responses"]["401"] =
                json!({"description": "missing or wrong bearer token, or no token configured"});
        }
        if let Some(body) = r.body {
            op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}});
        }
        let entry = paths.entry(r.path.to_owned()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "shardline", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Operate a shardline daemon: backends, services, sessions, cluster, critical state, metrics."},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}

pub(super) async fn serve() -> Json<Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_described_with_its_body_and_guard() {
        let doc = document();
        let routes = routes();
        let described: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|ops| ops.as_object().unwrap().len())
            .sum();
        assert_eq!(described, routes.len());
        for r in &routes {
            let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
            assert!(op.is_object(), "{} {} is not described", r.method, r.path);
            assert_eq!(op["security"].is_array(), r.guarded, "{}", r.path);
            if let Some(body) = r.body {
                assert!(
                    doc["components"]["schemas"][body].is_object(),
                    "schema {body}"
                );
            }
        }
    }
}
