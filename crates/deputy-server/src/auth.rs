//! Authentication. With a token configured, every request except the public ones (the
//! health probes, the dashboard's login page and its static assets, none of which reveal
//! anything) must carry either `Authorization: Bearer <token>` or the dashboard's session
//! cookie. Both comparisons take the same time whatever the input, so neither can be
//! guessed byte by byte from response times.
//!
//! The session cookie holds a digest of the token rather than the token itself, so a
//! browser never stores the secret that scripts and config files use. It is `HttpOnly`
//! (page scripts cannot read it) and `SameSite=Strict` (other sites' pages cannot send
//! it). As a second guard against cross-site requests, a change (any method but GET and
//! HEAD) made with the cookie must also carry the `X-Deputy-Dashboard` header, which a
//! cross-site form cannot set.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// Shortest token accepted: shorter ones are too easy to guess.
pub const MIN_TOKEN_LEN: usize = 16;
/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "deputy_session";
/// The header a cookie-authenticated change must carry.
pub const DASHBOARD_HEADER: &str = "x-deputy-dashboard";
/// How long a dashboard login lasts.
const SESSION_MAX_AGE_SECS: u64 = 7 * 24 * 3600;

#[derive(Clone)]
pub struct Token {
    secret: Arc<[u8]>,
    /// The session cookie's value: hex SHA-256 of a fixed label and the token.
    session: Arc<str>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    pub fn new(token: &str) -> Result<Self, String> {
        if token.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "the API token must be at least {MIN_TOKEN_LEN} characters long"
            ));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the API token may not contain spaces or control characters".into());
        }
        let digest = Sha256::new()
            .chain_update(b"deputy dashboard session v1\0")
            .chain_update(token.as_bytes())
            .finalize();
        let session: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self {
            secret: token.as_bytes().into(),
            session: session.into(),
        })
    }

    pub(crate) fn matches(&self, presented: &[u8]) -> bool {
        // ct_eq on slices of different lengths returns false without comparing contents;
        // the length of the token is not a secret worth hiding.
        self.secret.as_ref().ct_eq(presented).into()
    }

    fn session_matches(&self, presented: &[u8]) -> bool {
        self.session.as_bytes().ct_eq(presented).into()
    }

    /// `Set-Cookie` for a fresh dashboard login.
    pub(crate) fn session_cookie(&self) -> String {
        format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_MAX_AGE_SECS}",
            self.session
        )
    }
}

/// `Set-Cookie` that ends a dashboard login.
pub(crate) fn cleared_session_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Paths anyone may fetch: they reveal nothing about tasks or the daemon.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/login" | "/logout") || path.starts_with("/assets/")
}

/// How a request proved it may act.
enum Credential {
    Bearer,
    Session,
    Missing,
}

fn credential(headers: &HeaderMap, token: &Token) -> Credential {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if bearer.is_some_and(|p| token.matches(p.as_bytes())) {
        return Credential::Bearer;
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value);
    if cookie.is_some_and(|c| token.session_matches(c.as_bytes())) {
        return Credential::Session;
    }
    Credential::Missing
}

pub(crate) async fn require_token(
    State(token): State<Option<Token>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = token else {
        return next.run(req).await;
    };
    if is_public(req.uri().path()) {
        return next.run(req).await;
    }
    match credential(req.headers(), &token) {
        Credential::Bearer => next.run(req).await,
        Credential::Session => {
            let reads = matches!(*req.method(), Method::GET | Method::HEAD);
            if reads || req.headers().contains_key(DASHBOARD_HEADER) {
                next.run(req).await
            } else {
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a change made with the dashboard's session cookie must carry the \
                     X-Deputy-Dashboard header (scripts should send `Authorization: Bearer <token>` instead)",
                )
                .into_response()
            }
        }
        // A person opening the dashboard without a session is sent to log in.
        Credential::Missing if req.method() == Method::GET && req.uri().path() == "/" => {
            Redirect::to("/login").into_response()
        }
        Credential::Missing => {
            let mut resp = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong API token: send `Authorization: Bearer <token>` (the daemon's `api_token`), or log in to the dashboard at /login",
            )
            .into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_cookie_holds_a_digest_not_the_token() {
        let t = Token::new("correct-horse-battery-staple").unwrap();
        let cookie = t.session_cookie();
        assert!(!cookie.contains("correct-horse"), "{cookie}");
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
        // The token itself is not a session, and a session is not a bearer token.
        let as_cookie = headers(&[("cookie", "deputy_session=correct-horse-battery-staple")]);
        assert!(matches!(credential(&as_cookie, &t), Credential::Missing));
        let session = t.session.to_string();
        let as_bearer = headers(&[("authorization", &format!("Bearer {session}"))]);
        assert!(matches!(credential(&as_bearer, &t), Credential::Missing));
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let t = Token::new("correct-horse-battery-staple").unwrap();
        let value = format!("theme=dark; {SESSION_COOKIE}={}; x=1", t.session);
        assert!(matches!(
            credential(&headers(&[("cookie", &value)]), &t),
            Credential::Session
        ));
        let other = Token::new("another-token-entirely").unwrap();
        assert!(matches!(
            credential(&headers(&[("cookie", &value)]), &other),
            Credential::Missing
        ));
    }
}
