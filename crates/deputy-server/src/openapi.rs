//! The OpenAPI 3.1 document, generated from the handlers' annotations and the API
//! types. Served at `/v1/openapi.json`; a copy is checked in at `docs/openapi.json` and a
//! test fails when it is stale.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::dashboard::figures;
use crate::{api, metrics_http, schedules_api, sse};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "deputy",
        description = "Queue, run and observe shell tasks and agents, down to each model call. Errors are `{\"error\": {\"code\", \"message\"}}`. With an API token configured, send `Authorization: Bearer <token>`."
    ),
    paths(
        api::healthz, api::readyz, api::version, api::status, api::nodes,
        api::submit, api::list, api::get_task, api::cancel, api::retry, api::logs,
        api::trace,
        sse::task_events, sse::all_events,
        api::pause, api::resume, api::groups, api::add_group, api::update_group, api::clean,
        schedules_api::add, schedules_api::list, schedules_api::show, schedules_api::remove,
        schedules_api::pause, schedules_api::resume,
        metrics_http::metrics, figures::stats,
    ),
    components(schemas(deputy_core::api::BatchResult, deputy_core::EventBody)),
    modifiers(&BearerAuth, &Conformance),
    security(("bearer" = []), ())
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// What every route does alike, written once instead of on each handler: the errors any
/// request can get (a malformed request, a missing token, a body that is too large or not
/// JSON), and the shape of path parameters (task ids, group and schedule names), so the
/// document says exactly what the daemon accepts.
struct Conformance;

const ID_PATTERN: &str = "^[0-9a-fA-F]{8,32}$";
const NAME_PATTERN: &str = "^[A-Za-z0-9._-]{1,64}$";

impl Modify for Conformance {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{RefOr, Response, ResponseBuilder};

        let error = |description: &str| -> RefOr<Response> {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                            .build(),
                    )
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = path == "/healthz" || path == "/readyz";
            let ops = [
                item.get.as_mut(),
                item.post.as_mut(),
                item.patch.as_mut(),
                item.delete.as_mut(),
                item.put.as_mut(),
            ];
            for op in ops.into_iter().flatten() {
                let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                let has_body = op.request_body.is_some();
                let r = &mut op.responses.responses;
                if !public {
                    r.entry("401".into()).or_insert_with(|| {
                        error("The daemon has an API token and the request did not send it (`Authorization: Bearer <token>`)")
                    });
                }
                if has_params || has_body {
                    r.entry("400".into()).or_insert_with(|| {
                        error("Malformed request: a bad id, name or query parameter, or a body that is not JSON")
                    });
                }
                if !public && !matches!(path.as_str(), "/metrics") {
                    r.entry("507".into()).or_insert_with(|| {
                        error("The database's disk is full: nothing was written; free space and try again")
                    });
                    r.entry("503".into()).or_insert_with(|| {
                        error("The database is locked by another process, or the daemon is shutting down: try again")
                    });
                }
                if has_body {
                    r.entry("413".into())
                        .or_insert_with(|| error("The body is over the daemon's `max_body`"));
                    r.entry("415".into()).or_insert_with(|| {
                        error("A body was sent without `Content-Type: application/json`")
                    });
                    r.entry("422".into()).or_insert_with(|| {
                        error("Well-formed JSON that is not a valid request (the message says which field)")
                    });
                }
                for p in op.parameters.iter_mut().flatten() {
                    let RefOr::T(p) = p else { continue };
                    if p.parameter_in != ParameterIn::Path {
                        continue;
                    }
                    let pattern = match p.name.as_str() {
                        "id" => ID_PATTERN,
                        "name" => NAME_PATTERN,
                        _ => continue,
                    };
                    p.schema = Some(RefOr::T(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .pattern(Some(pattern))
                            .into(),
                    ));
                }
            }
        }
    }
}

/// The document as pretty JSON, exactly as served and checked in.
pub fn document() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut s = doc
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    /// Fails when `docs/openapi.json` differs from what the code generates. Regenerate
    /// with `DEPUTY_UPDATE_OPENAPI=1 cargo test -p deputy-server openapi`.
    #[test]
    fn checked_in_openapi_is_current() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let generated = super::document();
        if std::env::var_os("DEPUTY_UPDATE_OPENAPI").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == generated,
            "docs/openapi.json is stale: regenerate it with \
             `DEPUTY_UPDATE_OPENAPI=1 cargo test -p deputy-server openapi` and commit it"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_and_names_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&super::document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/v1/tasks",
            "/v1/tasks/{id}",
            "/v1/tasks/{id}/cancel",
            "/v1/tasks/{id}/retry",
            "/v1/tasks/{id}/logs",
            "/v1/tasks/{id}/events",
            "/v1/events",
            "/v1/queue/pause",
            "/v1/queue/resume",
            "/v1/groups",
            "/v1/groups/{name}",
            "/v1/clean",
            "/v1/status",
            "/v1/version",
            "/v1/nodes",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is missing");
        }
        assert!(doc["components"]["schemas"]["NewTask"].is_object());
    }
}
