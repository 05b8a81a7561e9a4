//! The web dashboard: a small single-page app embedded in the binary (nothing is fetched
//! from elsewhere, so it works offline), its login page, and the daemon's recent figures
//! that its sparklines draw. The page uses only the public HTTP API and its SSE streams.

mod assets;
pub(crate) mod figures;
mod login;

use axum::Router;
use axum::routing::get;

use crate::AppState;
use crate::auth::Token;

pub use figures::Figures;

/// `/` (the app), `/assets/{file}`, `/login` and `/logout`.
pub(crate) fn routes(token: Option<Token>) -> Router<AppState> {
    let login = Router::new()
        .route("/login", get(login::page).post(login::submit))
        .route("/logout", axum::routing::post(login::logout))
        .with_state(token);
    Router::new()
        .route("/", get(assets::index))
        .route("/assets/{file}", get(assets::file))
        .merge(login)
}
