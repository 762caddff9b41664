//! The OpenAPI 3.1 document of the HTTP API (`GET /v1/openapi.json`).
//!
//! Written here beside the handlers rather than derived by a macro crate; the tests check that
//! it documents exactly the routes of [`ROUTES`](crate::app::ROUTES), and the end-to-end tests
//! that every status it lists is the one the hub answers.

use serde_json::{Value, json};

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn unavailable() -> Value {
    json!({
        "description": "The broker is unavailable (or a limit is reached); try again after Retry-After seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

fn channel_param() -> Value {
    json!({
        "name": "channel", "in": "path", "required": true,
        "description": "1–200 characters from A–Z a–z 0–9 _ - . @ / (`/` separates namespaces).",
        "schema": {"$ref": "#/components/schemas/ChannelName"}
    })
}

fn ok(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
    })
}

/// The document.
pub(crate) fn document() -> Value {
    let publish_errors = |v: &mut Value| {
        let r = &mut v["responses"];
        r["400"] = error("Bad channel name, event name, idempotency key or body.");
        r["401"] = error("No credentials, or wrong ones.");
        r["403"] = error("The JWT's `ssehub.publish` does not allow the channel.");
        r["413"] = error("`data` is over the limit (1 MiB by default).");
        r["503"] = unavailable();
    };
    let mut publish_one = json!({
        "summary": "Publish one event to a channel",
        "operationId": "publish",
        "security": [{"publishKey": []}, {"jwt": []}],
        "parameters": [channel_param(), {
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "A repeat within 2 minutes, on any hub of the broker, answers the same id and publishes nothing.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255}
        }],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PublishRequest"}}}},
        "responses": {"200": ok("Published.", "PublishResponse")}
    });
    publish_errors(&mut publish_one);
    let mut publish_batch = json!({
        "summary": "Publish up to 1,000 events, in order, across channels",
        "operationId": "publishBatch",
        "security": [{"publishKey": []}, {"jwt": []}],
        "parameters": [{
            "name": "Idempotency-Key", "in": "header", "required": false,
            "description": "Makes the whole batch idempotent (per event) for 2 minutes, on any hub.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255}
        }],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchRequest"}}}},
        "responses": {"200": ok("Published; ids in the order of the events.", "BatchResponse")}
    });
    publish_errors(&mut publish_batch);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ssehub",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The ssehub hub: publish over HTTP, subscribe with Server-Sent Events. The wire format is described in PROTOCOL.md."
        },
        "paths": {
            "/v1/publish/{channel}": {"post": publish_one},
            "/v1/publish": {"post": publish_batch},
            "/v1/sse": {"get": {
                "summary": "Subscribe to channels: one multiplexed text/event-stream",
                "operationId": "subscribe",
                "security": [{"jwt": []}, {"tokenQuery": []}, {"tokenCookie": []}],
                "parameters": [
                    {"name": "channel", "in": "query", "required": true, "style": "form", "explode": true,
                     "schema": {"type": "array", "items": {"$ref": "#/components/schemas/ChannelName"}, "minItems": 1, "maxItems": 32}},
                    {"name": "lastEventId", "in": "query", "required": false, "schema": {"type": "string"},
                     "description": "Resume point when the Last-Event-ID header cannot be set."},
                    {"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "string"}},
                    {"name": "presence", "in": "query", "required": false, "schema": {"type": "string", "enum": ["1", "true", "yes"]},
                     "description": "Also receive `CHANNEL:presence` events with `{\"sessions\": n}` when a channel's cluster-wide count changes."}
                ],
                "responses": {
                    "200": {"description": "The stream (see PROTOCOL.md).", "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                    "400": error("No channel, too many, a bad or repeated name."),
                    "401": error("No token, or an invalid or expired one."),
                    "403": error("The token does not allow a channel; `channel` names it."),
                    "503": unavailable()
                }
            }},
            "/v1/presence/{channel}": {"get": {
                "summary": "Who is on a channel, across every hub",
                "operationId": "presence",
                "security": [{"publishKey": []}, {"jwt": []}],
                "parameters": [channel_param()],
                "responses": {
                    "200": ok("Presence.", "Presence"),
                    "400": error("Bad channel name."),
                    "401": error("No credentials, or wrong ones."),
                    "403": error("The JWT's `ssehub.publish` does not allow the channel.")
                }
            }},
            "/v1/history/{channel}": {"get": {
                "summary": "A channel's events after an id",
                "operationId": "history",
                "security": [{"publishKey": []}, {"jwt": []}],
                "parameters": [channel_param(),
                    {"name": "since", "in": "query", "required": true, "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1000}}],
                "responses": {
                    "200": ok("Events, oldest first.", "History"),
                    "400": error("Bad channel name, no `since`, or a bad `limit`."),
                    "401": error("No credentials, or wrong ones."),
                    "403": error("The JWT's `ssehub.publish` does not allow the channel."),
                    "503": unavailable()
                }
            }},
            "/healthz": {"get": {
                "summary": "Health of the hub and its broker",
                "operationId": "health",
                "responses": {
                    "200": {"description": "Healthy.", "content": {"application/json": {"schema": {"type": "object"}}}},
                    "503": unavailable()
                }
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics",
                "operationId": "metrics",
                "responses": {"200": {"description": "Prometheus text format.", "content": {"text/plain": {"schema": {"type": "string"}}}}}
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "operationId": "openapi",
                "responses": {"200": {"description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}
        },
        "components": {
            "securitySchemes": {
                "publishKey": {"type": "http", "scheme": "bearer", "description": "A publish key (--publish-key)."},
                "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "tokenQuery": {"type": "apiKey", "in": "query", "name": "token"},
                "tokenCookie": {"type": "apiKey", "in": "cookie", "name": "ssehub_token"}
            },
            "schemas": {
                "ChannelName": {"type": "string", "pattern": "^[A-Za-z0-9_.@/-]{1,200}$"},
                "EventName": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
                "Error": {"type": "object", "required": ["error"], "properties": {
                    "error": {"type": "string"},
                    "channel": {"type": "string", "description": "The channel refused (403)."}
                }},
                "PublishRequest": {"type": "object", "required": ["data"], "additionalProperties": false, "properties": {
                    "data": {"description": "Any JSON."},
                    "event": {"$ref": "#/components/schemas/EventName"}
                }},
                "PublishResponse": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
                "BatchRequest": {"type": "object", "required": ["events"], "additionalProperties": false, "properties": {
                    "events": {"type": "array", "maxItems": 1000, "items": {
                        "type": "object", "required": ["channel", "data"], "additionalProperties": false, "properties": {
                            "channel": {"$ref": "#/components/schemas/ChannelName"},
                            "data": {"description": "Any JSON."},
                            "event": {"$ref": "#/components/schemas/EventName"}
                        }
                    }}
                }},
                "BatchResponse": {"type": "object", "required": ["ids"], "properties": {"ids": {"type": "array", "items": {"type": "string"}}}},
                "Presence": {"type": "object", "required": ["channel", "connections", "users"], "properties": {
                    "channel": {"type": "string"},
                    "connections": {"type": "integer"},
                    "users": {"type": "array", "items": {"type": "object", "required": ["sub", "connections"], "properties": {
                        "sub": {"type": "string"}, "info": {}, "connections": {"type": "integer"}
                    }}}
                }},
                "History": {"type": "object", "required": ["events", "complete"], "properties": {
                    "events": {"type": "array", "items": {"type": "object", "required": ["id", "data"], "properties": {
                        "id": {"type": "string"}, "event": {"type": "string"}, "data": {}
                    }}},
                    "complete": {"type": "boolean", "description": "false when history no longer reaches back to `since`."}
                }}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn documents_exactly_the_routes() {
        let doc = super::document();
        let paths = doc["paths"].as_object().into_iter().flatten();
        let mut documented: Vec<(String, String)> = paths
            .flat_map(|(path, ops)| {
                ops.as_object()
                    .into_iter()
                    .flatten()
                    .map(move |(m, _)| (m.to_uppercase(), path.clone()))
            })
            .collect();
        let mut routes: Vec<(String, String)> = crate::app::ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
    }
}
