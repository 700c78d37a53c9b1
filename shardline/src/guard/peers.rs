//! The cluster secret: every request on the peer endpoint (raft RPCs, forwarded writes and
//! reads, membership, status) carries `Authorization: Bearer SECRET`, and the endpoint refuses
//! any other before reading its body. The secret is a [`Keyring`] in `[cluster] secret_file`:
//! a node sends the first line and accepts every line, so it rotates node by node. Without a
//! secret file, `[cluster] insecure = true` is the explicit opt-out; with neither, the
//! configuration does not validate when the node listens, and the endpoint refuses everything.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header::AUTHORIZATION, HeaderMap, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::warn;

use super::{bearer, Keyring, Refusal, TokenError};
use crate::config::cluster::ClusterConfig;

/// How the peer endpoint authenticates.
#[derive(Clone, Debug)]
pub enum PeerAuth {
    /// The cluster secret.
    Secret(Keyring),
    /// None (`insecure = true`): any host that reaches the peer port is a peer.
    Insecure,
    /// Nothing configured: every peer request is refused.
    Unconfigured,
}

impl PeerAuth {
    /// What `[cluster]` configures, reading the secret file.
    pub fn load(config: &ClusterConfig) -> Result<Self, TokenError> {
        Ok(match (&config.secret_file, config.insecure) {
            (Some(path), _) => Self::Secret(Keyring::read(path, "cluster.secret_file")?),
            (None, true) => Self::Insecure,
            (None, false) => Self::Unconfigured,
        })
    }

    /// The headers this node sends with every peer request.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Self::Secret(ring) = self {
            let value = format!("Bearer {}", ring.current().secret());
            if let Ok(mut value) = HeaderValue::from_str(&value) {
                value.set_sensitive(true);
                headers.insert(AUTHORIZATION, value);
            }
        }
        headers
    }

    /// Whether a request with `headers` comes from a peer.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        match self {
            Self::Insecure => Ok(()),
            Self::Unconfigured => Err(Refusal::unauthorized(
                "cluster_auth_unconfigured",
                "this node has no cluster secret, so it refuses every peer: set [cluster] \
                 secret_file (the same secret on every node), or [cluster] insecure = true on \
                 a peer network no one else reaches",
            )),
            Self::Secret(ring) => match bearer(headers) {
                None => Err(Refusal::unauthorized(
                    "missing_secret",
                    "peer requests must carry the cluster secret as `Authorization: Bearer SECRET`",
                )),
                Some(offered) if ring.accepts(offered) => Ok(()),
                Some(_) => Err(Refusal::unauthorized(
                    "bad_secret",
                    "the cluster secret is not this cluster's; every node needs the same \
                     [cluster] secret_file",
                )),
            },
        }
    }
}

/// Middleware: runs the request only if it carries the cluster secret.
pub async fn require(State(auth): State<Arc<PeerAuth>>, request: Request, next: Next) -> Response {
    match auth.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => {
            warn!(path = %request.uri().path(), code = refusal.code, "refused a peer request");
            refusal.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_send_the_first_secret_and_accept_any() {
        let auth = PeerAuth::Secret(Keyring::parse("new\nold\n", "test").unwrap());
        let sent = auth.headers();
        assert_eq!(sent[AUTHORIZATION], "Bearer new");
        assert!(sent[AUTHORIZATION].is_sensitive());
        assert!(auth.check(&sent).is_ok());
        let old = PeerAuth::Secret(Keyring::parse("old\n", "test").unwrap());
        assert!(
            auth.check(&old.headers()).is_ok(),
            "mid-rotation peers agree"
        );
        let other = PeerAuth::Secret(Keyring::parse("other\n", "test").unwrap());
        assert_eq!(auth.check(&other.headers()).unwrap_err().code, "bad_secret");
        assert_eq!(
            auth.check(&HeaderMap::new()).unwrap_err().code,
            "missing_secret"
        );
        let e = PeerAuth::Unconfigured.check(&sent).unwrap_err();
        assert!(e.message.contains("secret_file") && e.message.contains("insecure"));
        assert!(PeerAuth::Insecure.check(&HeaderMap::new()).is_ok());
        assert!(PeerAuth::Insecure.headers().is_empty());
    }
}
