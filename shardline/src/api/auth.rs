//! The bearer token: where it comes from, and the extractor that guards writes and state reads.
//!
//! A production balancer must not let a stray request re-route traffic, so with no token
//! configured the API is read-only: every guarded route answers 401 `no_token_configured`
//! rather than trusting whoever can reach the port.

use axum::{extract::FromRequestParts, http::request::Parts, http::StatusCode};

use super::{error::ApiError, ApiState};
use crate::config::ApiConfig;

/// Environment variable holding the token; it overrides `[api] token_file`.
pub const TOKEN_ENV: &str = "SHARDLINE_API_TOKEN";

pub use crate::guard::{Token, TokenError};

impl Token {
    /// The token the configuration names: `SHARDLINE_API_TOKEN` if set, else `token_file`,
    /// else none (a read-only API).
    pub fn load(config: &ApiConfig) -> Result<Option<Self>, TokenError> {
        if let Ok(text) = std::env::var(TOKEN_ENV) {
            return Self::new(&text, TOKEN_ENV).map(Some);
        }
        let Some(path) = &config.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Read {
            path: path.clone(),
            field: "api.token_file",
            source,
        })?;
        Self::new(&text, &path.display().to_string()).map(Some)
    }
}

/// Proof that a request carried the configured bearer token: take it as a handler argument
/// (before any body) to guard the route.
#[derive(Debug)]
pub struct Authorized;

impl FromRequestParts<ApiState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let unauthorized =
            |code, message: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, message);
        let Some(token) = state.token() else {
            return Err(unauthorized(
                "no_token_configured",
                "this daemon has no API token, so its API is read-only; set [api] token_file \
                 or SHARDLINE_API_TOKEN and restart or reload it",
            ));
        };
        match crate::guard::bearer(&parts.headers) {
            None => Err(unauthorized(
                "missing_token",
                "this route needs `Authorization: Bearer TOKEN`",
            )),
            Some(offered) if token.matches(offered) => Ok(Authorized),
            Some(_) => Err(unauthorized(
                "bad_token",
                "the bearer token is not this daemon's",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_and_a_missing_one_named() {
        let path = std::env::temp_dir().join(format!("shardline-token-{}", std::process::id()));
        std::fs::write(&path, "abc\n").unwrap();
        let config = ApiConfig {
            token_file: Some(path.clone()),
            ..Default::default()
        };
        // The environment variable would override the file; tests leave it unset.
        if std::env::var(TOKEN_ENV).is_err() {
            assert!(Token::load(&config).unwrap().unwrap().matches("abc"));
            std::fs::remove_file(&path).unwrap();
            let e = Token::load(&config).unwrap_err().to_string();
            assert!(e.contains("api.token_file"), "{e}");
            assert!(Token::load(&ApiConfig::default()).unwrap().is_none());
        }
    }
}
