//! The OpenAPI 3.1 document of the HTTP API (`GET /v1/openapi.json`), generated with `utoipa`.
//!
//! Each handler carries its `#[utoipa::path]` (parameters, security, answers), each body the
//! handlers read or write derives `ToSchema`; this module gathers them in [`ApiDoc`], adds the
//! security schemes and the info, and holds the schemas of the strings the handlers check by hand
//! (channel and event names, `presence`, `limit`). The tests check that the document covers
//! exactly the routes of [`ROUTES`](crate::app::ROUTES), that its references resolve and that
//! the handlers' real answers match their schemas; the end-to-end tests that every status it
//! lists is the one the hub answers.

use std::borrow::Cow;
use std::sync::LazyLock;

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Info, RefOr};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use crate::channels::{MAX_CHANNEL_LEN, MAX_EVENT_LEN};

/// The description of a `{channel}` path parameter.
pub(crate) const CHANNEL: &str =
    "1–200 characters from A–Z a–z 0–9 _ - . @ / (`/` separates namespaces).";
/// The `401` of the routes with publish credentials.
pub(crate) const UNAUTHORIZED: &str = "No credentials, or wrong ones.";
/// The `403` of the routes with publish credentials.
pub(crate) const FORBIDDEN_PUBLISH: &str = "The JWT's `ssehub.publish` does not allow the channel.";
/// Every `503` (with `Retry-After`).
pub(crate) const UNAVAILABLE: &str =
    "The broker is unavailable (or a limit is reached); try again after Retry-After seconds.";

/// A channel name, as [`check_channel`](crate::channels::check_channel) takes it (a schema
/// only: the handlers take names as strings).
pub(crate) enum ChannelName {}

impl PartialSchema for ChannelName {
    fn schema() -> RefOr<Schema> {
        let pattern = format!("^[A-Za-z0-9_.@/-]{{1,{MAX_CHANNEL_LEN}}}$");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .into()
    }
}

impl ToSchema for ChannelName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("ChannelName")
    }
}

/// An event name, as [`check_event`](crate::channels::check_event) takes it (a schema only).
pub(crate) enum EventName {}

impl PartialSchema for EventName {
    fn schema() -> RefOr<Schema> {
        let pattern = format!("^[A-Za-z0-9_.-]{{1,{MAX_EVENT_LEN}}}$");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(pattern))
            .into()
    }
}

impl ToSchema for EventName {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("EventName")
    }
}

/// The values of `presence` that ask for presence events (inlined; any other means no).
pub(crate) enum PresenceFlag {}

impl PartialSchema for PresenceFlag {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(["1", "true", "yes"]))
            .into()
    }
}

/// The `limit` of a history query (inlined): 1 to [`MAX_HISTORY`](crate::query::MAX_HISTORY),
/// which is also the default.
pub(crate) enum HistoryLimit {}

impl PartialSchema for HistoryLimit {
    fn schema() -> RefOr<Schema> {
        let max = crate::query::MAX_HISTORY;
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1))
            .maximum(Some(max))
            .default(Some(max.into()))
            .into()
    }
}

/// The document: the handlers' paths and, through them, the schemas of their bodies.
#[derive(OpenApi)]
#[openapi(
    paths(
        crate::publish::one,
        crate::publish::batch,
        crate::subscribe::stream,
        crate::query::presence,
        crate::query::history,
        crate::ops::healthz,
        crate::ops::metrics,
        crate::ops::openapi,
    ),
    components(schemas(ChannelName, EventName)),
    modifiers(&Setup)
)]
pub(crate) struct ApiDoc;

/// Sets the info, drops the tags and adds the security schemes the paths name.
struct Setup;

impl Modify for Setup {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let mut info = Info::new("ssehub", env!("CARGO_PKG_VERSION"));
        info.description = Some(
            "The ssehub hub: publish over HTTP, subscribe with Server-Sent Events. \
             The wire format is described in PROTOCOL.md."
                .into(),
        );
        doc.info = info;
        // No tags: `utoipa` would tag each operation with its handler's module path.
        for item in doc.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                operation.tags = None;
            }
        }
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = || HttpBuilder::new().scheme(HttpAuthScheme::Bearer);
        let publish_key = bearer().description(Some("A publish key (--publish-key)."));
        let schemes = [
            ("publishKey", SecurityScheme::Http(publish_key.build())),
            (
                "jwt",
                SecurityScheme::Http(bearer().bearer_format("JWT").build()),
            ),
            (
                "tokenQuery",
                SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("token"))),
            ),
            (
                "tokenCookie",
                SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(crate::subscribe::COOKIE))),
            ),
        ];
        for (name, scheme) in schemes {
            components.add_security_scheme(name, scheme);
        }
    }
}

/// The document as JSON, built once.
pub(crate) fn json() -> &'static str {
    static JSON: LazyLock<String> = LazyLock::new(|| {
        // A document of strings, maps and numbers always serializes.
        ApiDoc::openapi()
            .to_json()
            .expect("the OpenAPI document serializes")
    });
    &JSON
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::{Value, json};

    fn document() -> Value {
        serde_json::from_str(super::json()).unwrap()
    }

    /// The schema `schema` points to (itself unless it is a `$ref`).
    fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r.strip_prefix("#/components/schemas/").unwrap();
                &doc["components"]["schemas"][name]
            }
            None => schema,
        }
    }

    /// Checks `value` against `schema` structurally (types, required and documented properties,
    /// items, enums, bounds; not patterns); with `complete`, every documented property of every
    /// object must be present too.
    fn check(doc: &Value, schema: &Value, value: &Value, complete: bool, at: &str) {
        let schema = resolve(doc, schema);
        assert!(schema.is_object(), "{at}: no schema");
        if let Some(values) = schema["enum"].as_array() {
            assert!(values.contains(value), "{at}: {value} not in {values:?}");
        }
        match schema["type"].as_str() {
            None => {} // any value
            Some("object") => {
                let object = value
                    .as_object()
                    .unwrap_or_else(|| panic!("{at}: not an object"));
                let properties = schema["properties"].as_object().unwrap();
                for name in schema["required"].as_array().into_iter().flatten() {
                    let name = name.as_str().unwrap();
                    assert!(object.contains_key(name), "{at}: {name} is required");
                }
                for (name, v) in object {
                    let property = properties.get(name);
                    let property = property.unwrap_or_else(|| panic!("{at}.{name}: undocumented"));
                    check(doc, property, v, complete, &format!("{at}.{name}"));
                }
                if complete {
                    for name in properties.keys() {
                        assert!(object.contains_key(name), "{at}.{name}: not in {value}");
                    }
                }
            }
            Some("array") => {
                let items = value
                    .as_array()
                    .unwrap_or_else(|| panic!("{at}: not an array"));
                let max = schema["maxItems"].as_u64().unwrap_or(u64::MAX);
                assert!(items.len() as u64 <= max, "{at}: over maxItems");
                for (i, item) in items.iter().enumerate() {
                    check(doc, &schema["items"], item, complete, &format!("{at}[{i}]"));
                }
            }
            Some("string") => assert!(value.is_string(), "{at}: {value} is not a string"),
            Some("boolean") => assert!(value.is_boolean(), "{at}: {value} is not a boolean"),
            Some("integer") => {
                let n = value
                    .as_i64()
                    .unwrap_or_else(|| panic!("{at}: not an integer"));
                assert!(
                    schema["minimum"].as_i64().is_none_or(|min| n >= min),
                    "{at}: < min"
                );
            }
            Some(other) => panic!("{at}: unexpected type {other}"),
        }
    }

    /// The schema a route answers `status` with (as JSON), or takes as its body.
    fn body_schema<'a>(doc: &'a Value, path: &str, method: &str, status: &str) -> &'a Value {
        let operation = &doc["paths"][path][method];
        let content = match status {
            "request" => &operation["requestBody"]["content"],
            _ => &operation["responses"][status]["content"],
        };
        &content["application/json"]["schema"]
    }

    #[test]
    fn documents_exactly_the_routes() {
        let doc = document();
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

    #[test]
    fn every_reference_resolves() {
        fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
            match value {
                Value::Object(map) => {
                    out.extend(map.get("$ref").and_then(Value::as_str));
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let doc = document();
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20, "{all:?}");
        for r in all {
            let name = r.strip_prefix("#/components/schemas/");
            let name = name.unwrap_or_else(|| panic!("{r}: not a schema"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r}: no such schema"
            );
        }
        // And every security requirement names a scheme.
        let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
        for item in doc["paths"].as_object().unwrap().values() {
            for operation in item.as_object().unwrap().values() {
                for requirement in operation["security"].as_array().into_iter().flatten() {
                    for name in requirement.as_object().unwrap().keys() {
                        assert!(schemes.contains_key(name), "no security scheme {name}");
                    }
                }
            }
        }
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["info"]["title"], "ssehub");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }

    /// Answers of each kind, serialized from the handlers' types: with every optional field
    /// (`full`) or none.
    fn answers(full: bool) -> [(&'static str, &'static str, &'static str, Value); 6] {
        use crate::query::{HistoryAnswer, HistoryEvent, PresenceAnswer, UserAnswer};
        let data = serde_json::value::RawValue::from_string(r#"{"a": [1, null]}"#.into());
        let user = UserAnswer {
            sub: "u1".into(),
            info: full.then(|| json!({"name": "Ann"})),
            connections: 2,
        };
        let event = HistoryEvent {
            id: "1-0".into(),
            event: full.then(|| "chat".into()),
            data: data.unwrap(),
        };
        let error = "the token does not allow publishing to channel \"room/1\"".into();
        let ids = vec!["1-0".into(), "1-1".into()];
        [
            ("/v1/publish/{channel}", "post", "200", {
                json!(crate::publish::Published { id: "1-0".into() })
            }),
            ("/v1/publish", "post", "200", {
                json!(crate::publish::PublishedMany { ids })
            }),
            ("/v1/presence/{channel}", "get", "200", {
                let users = vec![user];
                let (channel, connections) = ("room/1".into(), 2);
                json!(PresenceAnswer {
                    channel,
                    connections,
                    users
                })
            }),
            ("/v1/history/{channel}", "get", "200", {
                let events = vec![event];
                json!(HistoryAnswer {
                    events,
                    complete: false
                })
            }),
            ("/healthz", "get", "200", {
                let (status, backend, connections) = ("ok", "memory", 0);
                json!(crate::ops::Health {
                    status,
                    backend,
                    connections
                })
            }),
            ("/v1/publish/{channel}", "post", "403", {
                let channel = full.then(|| "room/1".into());
                json!(crate::app::ErrorBody { error, channel })
            }),
        ]
    }

    #[test]
    fn real_answers_match_their_schemas() {
        let doc = document();
        for full in [true, false] {
            for (path, method, status, answer) in answers(full) {
                let schema = body_schema(&doc, path, method, status);
                let at = format!("{method} {path} {status}");
                check(&doc, schema, &answer, full, &at);
            }
        }
        // The bodies the publish routes take: what the schema allows, the handlers read.
        let one = json!({"data": {"n": 1}, "event": "chat"});
        let schema = body_schema(&doc, "/v1/publish/{channel}", "post", "request");
        check(&doc, schema, &one, true, "one");
        let one: crate::publish::One = serde_json::from_value(one).unwrap();
        assert_eq!(
            (one.data.get(), one.event.as_deref()),
            (r#"{"n":1}"#, Some("chat"))
        );
        let batch = json!({"events": [{"channel": "a", "data": 1, "event": "e"}]});
        let schema = body_schema(&doc, "/v1/publish", "post", "request");
        check(&doc, schema, &batch, true, "batch");
        let batch: crate::publish::Batch = serde_json::from_value(batch).unwrap();
        assert_eq!(batch.events[0].channel, "a");
        let max = resolve(&doc, schema)["properties"]["events"]["maxItems"].clone();
        assert_eq!(max, crate::publish::MAX_BATCH);
        // What the schemas forbid (an unknown field), the handlers refuse.
        assert_eq!(resolve(&doc, schema)["additionalProperties"], false);
        let unknown = json!({"data": 1, "extra": 2});
        assert!(serde_json::from_value::<crate::publish::One>(unknown).is_err());
    }

    /// The characters a `^[…]{1,N}$` pattern allows, and `N`.
    fn class_and_max(pattern: &str) -> (Vec<u8>, usize) {
        let (class, rest) = pattern.strip_prefix("^[").unwrap().split_once(']').unwrap();
        let max = rest
            .strip_prefix("{1,")
            .unwrap()
            .strip_suffix("}$")
            .unwrap();
        let class = class.as_bytes();
        let mut allowed = Vec::new();
        let mut i = 0;
        while i < class.len() {
            if i + 2 < class.len() && class[i + 1] == b'-' {
                allowed.extend(class[i]..=class[i + 2]);
                i += 3;
            } else {
                allowed.push(class[i]);
                i += 1;
            }
        }
        (allowed, max.parse().unwrap())
    }

    #[test]
    fn name_patterns_are_the_checks() {
        use crate::channels::{check_channel, check_event};
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        type Check = fn(&str) -> Result<(), String>;
        let checks: [(&str, Check); 2] =
            [("ChannelName", check_channel), ("EventName", check_event)];
        for (name, check) in checks {
            let (allowed, max) = class_and_max(schemas[name]["pattern"].as_str().unwrap());
            for b in 0x20..0x7f_u8 {
                let name = format!("a{}a", b as char);
                assert_eq!(check(&name).is_ok(), allowed.contains(&b), "{name:?}");
            }
            assert!(check(&"a".repeat(max)).is_ok() && check(&"a".repeat(max + 1)).is_err());
            assert!(check("").is_err());
        }
    }
}
