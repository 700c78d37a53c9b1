//! Agents' credentials: one bearer token per backend, in a file named by its id
//! (`[control] agent_token_dir`/`ID.token`, a [`Keyring`]). A token speaks for its backend
//! only: the daemon looks the token up by the backend id the request names, so an agent cannot
//! report or register for another backend. Files are read on every request, so adding a
//! backend or rotating its token needs no restart. With neither a directory nor
//! `insecure_agents = true` every agent request is refused: an unconfigured daemon must not
//! trust whoever reaches its port.

use std::path::{Path, PathBuf};

use axum::http::HeaderMap;
use tracing::warn;

use super::{bearer, Keyring, Refusal};
use crate::config::control::ControlConfig;

/// How the agents' endpoint authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentAuth {
    /// One token file per backend in this directory.
    Tokens(PathBuf),
    /// None at all (`insecure_agents = true`): any host may speak for any backend.
    Insecure,
    /// Nothing configured: every agent request is refused.
    Unconfigured,
}

/// The file holding backend `id`'s token in `dir`.
pub fn token_path(dir: &Path, id: u32) -> PathBuf {
    dir.join(format!("{id}.token"))
}

impl AgentAuth {
    /// What `[control]` configures.
    pub fn from_config(config: &ControlConfig) -> Self {
        match (&config.agent_token_dir, config.insecure_agents) {
            (Some(dir), _) => Self::Tokens(dir.clone()),
            (None, true) => Self::Insecure,
            (None, false) => Self::Unconfigured,
        }
    }

    /// Refuses before the body is read: nothing configured, or no bearer token sent.
    pub fn precheck(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        match self {
            Self::Insecure => Ok(()),
            Self::Unconfigured => Err(Refusal::unauthorized(
                "agent_auth_unconfigured",
                "this daemon has no agent credentials, so it refuses every agent: set [control] \
                 agent_token_dir to a directory holding one token file per backend (`ID.token`) \
                 and start agents with --token-file, or set [control] insecure_agents = true \
                 where every host that reaches this port is trusted",
            )),
            Self::Tokens(_) if bearer(headers).is_none() => Err(Refusal::unauthorized(
                "missing_token",
                "agents must send `Authorization: Bearer TOKEN` with their backend's token \
                 (`shardline agent --token-file`)",
            )),
            Self::Tokens(_) => Ok(()),
        }
    }

    /// Whether the request's token is backend `id`'s.
    pub fn check(&self, headers: &HeaderMap, id: u32) -> Result<(), Refusal> {
        self.precheck(headers)?;
        let Self::Tokens(dir) = self else {
            return Ok(());
        };
        let offered = bearer(headers).unwrap_or_default();
        let path = token_path(dir, id);
        let accepted = match Keyring::read(&path, "control.agent_token_dir") {
            Ok(ring) => ring.accepts(offered),
            Err(e) => {
                // The caller learns only that the token is not backend `id`'s; the log says why.
                warn!(backend = id, "refusing an agent: {e}");
                false
            }
        };
        if accepted {
            Ok(())
        } else {
            warn!(
                backend = id,
                "refusing an agent whose token is not its backend's"
            );
            Err(Refusal::unauthorized(
                "bad_token",
                format!("the bearer token is not backend {id}'s; an agent speaks only for its own backend"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::header::AUTHORIZATION;

    use super::*;

    fn with(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
        h
    }

    #[test]
    fn a_token_speaks_for_its_backend_only() {
        let dir =
            std::env::temp_dir().join(format!("shardline-agent-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(token_path(&dir, 1), "one\n").unwrap();
        std::fs::write(token_path(&dir, 2), "two-new\ntwo-old\n").unwrap();
        let auth = AgentAuth::Tokens(dir.clone());
        assert!(auth.check(&with("one"), 1).is_ok());
        assert!(auth.check(&with("two-old"), 2).is_ok());
        assert_eq!(auth.check(&with("one"), 2).unwrap_err().code, "bad_token");
        assert_eq!(
            auth.check(&with("two-new"), 1).unwrap_err().code,
            "bad_token"
        );
        assert_eq!(auth.check(&with("one"), 3).unwrap_err().code, "bad_token");
        let none = HeaderMap::new();
        assert_eq!(auth.precheck(&none).unwrap_err().code, "missing_token");
        let e = AgentAuth::Unconfigured.check(&with("one"), 1).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code),
            (401, "agent_auth_unconfigured")
        );
        assert!(e.message.contains("agent_token_dir") && e.message.contains("insecure_agents"));
        assert!(AgentAuth::Insecure.check(&none, 7).is_ok());
        // Rotation: a new line is accepted at once, no restart.
        std::fs::write(token_path(&dir, 1), "one-b\none\n").unwrap();
        assert!(auth.check(&with("one-b"), 1).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
