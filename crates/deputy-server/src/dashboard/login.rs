//! The login form: a person pastes the daemon's API token once and gets the session
//! cookie (see `auth`). Without a token configured there is nothing to log in to.

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::assets::page_headers;
use crate::auth::{Token, cleared_session_cookie};

const PAGE: &str = include_str!("../../dashboard/login.html");
const ERROR_MARK: &str = "<!--error-->";

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    // The messages are fixed text of ours, never user input: nothing to escape.
    let body = match error {
        Some(e) => PAGE.replace(
            ERROR_MARK,
            &format!("<p class=\"error\" role=\"alert\">{e}</p>"),
        ),
        None => PAGE.to_string(),
    };
    (status, page_headers("text/html; charset=utf-8"), body).into_response()
}

pub(crate) async fn page(State(token): State<Option<Token>>) -> Response {
    match token {
        None => Redirect::to("/").into_response(),
        Some(_) => login_page(StatusCode::OK, None),
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
}

pub(crate) async fn submit(
    State(token): State<Option<Token>>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Some(expected) = token else {
        return Redirect::to("/").into_response();
    };
    let Ok(Form(form)) = form else {
        return login_page(
            StatusCode::BAD_REQUEST,
            Some("The form was not understood: enter the token and press Log in."),
        );
    };
    if !expected.matches(form.token.trim().as_bytes()) {
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some(
                "That is not this daemon's API token. It is the <code>api_token</code> in its config (or <code>DEPUTY_API_TOKEN</code>).",
            ),
        );
    }
    let mut resp = Redirect::to("/").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&expected.session_cookie()).expect("cookie is ASCII"),
    );
    resp
}

pub(crate) async fn logout() -> Response {
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cleared_session_cookie()).expect("cookie is ASCII"),
    );
    resp
}
