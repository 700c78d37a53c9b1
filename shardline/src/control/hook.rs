//! The autoscale hook: when the fleet forecast says healthy backends will not carry the load
//! within the lead time, the control loop calls a configured command or webhook with the
//! shortfall. What the hook does (start a VM, a container, a lab namespace) is its business;
//! a new backend joins by registering through its agent.

use std::{process::Stdio, time::Duration};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::AsyncWriteExt;

use crate::{config::control::HookConfig, http};

/// What the hook is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shortfall {
    /// Unix time, ms.
    pub at_ms: u64,
    /// Load (packets per second) the healthy backends will lack, headroom included.
    pub shortfall: f64,
    /// Upper forecast of the fleet's load at the lead time, packets per second.
    pub demand: f64,
    /// What healthy, unsaturated backends can carry, packets per second.
    pub capacity: f64,
    /// How far ahead the forecast looked, seconds.
    pub lead_secs: f64,
    /// Healthy backends now.
    pub healthy_backends: Vec<u32>,
    /// The services with a pool of their own whose pool falls short (a new backend should
    /// register for these); empty when only the fleet as a whole does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceShortfall>,
}

/// One service whose pool falls short of its sessions' forecast load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceShortfall {
    /// Service name.
    pub service: String,
    /// Upper forecast of its placed sessions' load, headroom included, packets per second.
    pub demand: f64,
    /// What its pool's healthy members can carry, packets per second.
    pub capacity: f64,
}

/// Why a hook call failed.
#[derive(Debug, Error)]
pub enum HookError {
    /// The command could not be started or waited for.
    #[error("hook command {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The command exited unsuccessfully.
    #[error("hook command {program:?} exited with {status}")]
    Failed {
        /// The program.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
    },
    /// The webhook could not be reached.
    #[error("webhook: {0}")]
    Http(#[from] http::HttpError),
    /// The webhook answered with an error status.
    #[error("webhook answered {0}")]
    Status(u16),
}

/// Calls `hook` with `shortfall`: the command gets it as JSON on stdin and in the environment
/// variable `SHARDLINE_SHORTFALL`; the webhook by POST through `client`. Waits at most
/// `timeout`.
pub async fn fire(
    client: &http::Client,
    hook: &HookConfig,
    shortfall: &Shortfall,
    timeout: Duration,
) -> Result<(), HookError> {
    let json = serde_json::to_string(shortfall).expect("serializable");
    if let Some(url) = &hook.webhook {
        let status = client.post_json(url, shortfall, timeout).await?.status;
        return if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(HookError::Status(status))
        };
    }
    let Some(command) = &hook.command else {
        return Ok(());
    };
    let program = command[0].clone();
    let spawn = |source| HookError::Spawn {
        program: program.clone(),
        source,
    };
    let mut child = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env("SHARDLINE_SHORTFALL", &json)
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(json.as_bytes()).await;
    }
    let status = tokio::time::timeout(timeout, child.wait())
        .await
        .map_err(|_| {
            spawn(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out",
            ))
        })?
        .map_err(spawn)?;
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed { program, status })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shortfall() -> Shortfall {
        Shortfall {
            at_ms: 1,
            shortfall: 500.0,
            demand: 2500.0,
            capacity: 2000.0,
            lead_secs: 10.0,
            healthy_backends: vec![1, 2],
            services: Vec::new(),
        }
    }

    #[tokio::test]
    async fn command_gets_the_shortfall_on_stdin() {
        let out = std::env::temp_dir().join(format!("shardline-hook-{}", std::process::id()));
        let hook = HookConfig {
            command: Some(vec![
                "sh".into(),
                "-c".into(),
                format!("cat > {}", out.display()),
            ]),
            webhook: None,
            lead_secs: 10.0,
            cooldown_secs: 10.0,
        };
        let client = http::Client::new();
        fire(&client, &hook, &shortfall(), Duration::from_secs(10))
            .await
            .unwrap();
        let got: Shortfall = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(got, shortfall());
        let _ = std::fs::remove_file(out);
        let failing = HookConfig {
            command: Some(vec!["false".into()]),
            ..hook
        };
        assert!(matches!(
            fire(&client, &failing, &shortfall(), Duration::from_secs(10)).await,
            Err(HookError::Failed { .. })
        ));
    }

    #[tokio::test]
    async fn webhook_gets_a_post() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = std::sync::Arc::new(tokio::sync::Mutex::new(None));
        let got2 = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(s): axum::Json<Shortfall>| async move {
                *got2.lock().await = Some(s);
                "ok"
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let hook = HookConfig {
            command: None,
            webhook: Some(format!("http://{addr}/hook")),
            lead_secs: 10.0,
            cooldown_secs: 10.0,
        };
        let client = http::Client::new();
        fire(&client, &hook, &shortfall(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(*got.lock().await, Some(shortfall()));
        let refused = HookConfig {
            webhook: Some(format!("http://{addr}/elsewhere")),
            ..hook
        };
        assert!(matches!(
            fire(&client, &refused, &shortfall(), Duration::from_secs(5)).await,
            Err(HookError::Status(404))
        ));
    }
}
