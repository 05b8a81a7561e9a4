//! The dashboard's files, compiled into the binary. Each response carries a strict
//! Content-Security-Policy (only this origin's scripts, styles and connections) and an
//! ETag, so a reload costs a 304.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// One embedded file of the `dashboard/` directory.
macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../../dashboard/", $name)),
        }
    };
}

/// The page first: `/` serves it.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; \
    frame-ancestors 'none'";

/// FNV-1a over the file and the daemon's version: stable across restarts of one build.
fn etag(asset: &Asset) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in env!("CARGO_PKG_VERSION")
        .as_bytes()
        .iter()
        .chain(asset.body)
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}\"")
}

/// Headers every dashboard page carries.
pub(crate) fn page_headers(content_type: &'static str) -> [(header::HeaderName, HeaderValue); 4] {
    [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
    ]
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let tag = etag(asset);
    let cache = [
        (
            header::ETAG,
            HeaderValue::from_str(&tag).expect("hex is a header value"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    if fresh {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (page_headers(asset.content_type), cache, asset.body).into_response()
}

pub(crate) async fn index(headers: HeaderMap) -> Response {
    serve(&ASSETS[0], &headers)
}

pub(crate) async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => serve(asset, &headers),
        None => ApiError::not_found(format!("no dashboard file `{name}`")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_assets_stay_small() {
        // The budget: under 300 KB in all.
        let total: usize = ASSETS.iter().map(|a| a.body.len()).sum();
        assert!(total < 300 * 1024, "dashboard assets are {total} bytes");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        // Every fetch is relative to this origin: no absolute URL in a src, href, url(),
        // import, fetch or EventSource. (The SVG namespace is a name, not a fetch.)
        let loads = [
            "src=\"http",
            "href=\"http",
            "url(http",
            "url(\"http",
            "url('http",
            "@import",
            "fetch(\"http",
            "fetch('http",
            "fetch(`http",
            "EventSource(\"http",
            "EventSource(`http",
        ];
        for a in ASSETS {
            let text = String::from_utf8_lossy(a.body);
            for needle in loads {
                assert!(
                    !text.contains(needle),
                    "{} loads from elsewhere: {needle}",
                    a.name
                );
            }
        }
    }
}
