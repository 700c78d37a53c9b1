//! Traffic from the lab's client namespace: the request sessions ([`Lab::drive`], observed
//! into a [`Report`]), rate-shaped load ([`Lab::drive_load`]) and one migrating QUIC
//! connection ([`Lab::drive_quic`]). Each runs on a thread of its own, so entering the
//! client's namespace never moves the caller.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    load, quic,
    topology::{self, VIP4},
    traffic, Lab, LabError, QUIC_PORT,
};

/// What the client observed.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every answered request.
    pub observations: Vec<traffic::Observation>,
    /// Requests that got no answer in time.
    pub lost: u64,
    /// Requests that failed locally (socket errors).
    pub errors: u64,
}

impl Report {
    /// Per session: answered requests by backend id.
    pub fn by_session(&self) -> BTreeMap<usize, BTreeMap<u32, u64>> {
        let mut out: BTreeMap<usize, BTreeMap<u32, u64>> = BTreeMap::new();
        for o in &self.observations {
            *out.entry(o.session)
                .or_default()
                .entry(o.backend)
                .or_default() += 1;
        }
        out
    }
}

impl Lab {
    /// Runs the client's sessions for `duration` (or until `stop` says so), calling `tick`
    /// about once a second with everything observed so far.
    pub fn drive(
        &self,
        duration: Duration,
        stop: &(dyn Fn() -> bool + Sync),
        tick: &mut (dyn FnMut(Duration, &Report) + Send),
    ) -> Result<Report, LabError> {
        let client = &self.topology.client;
        let sessions = self.sessions.clone();
        std::thread::scope(|scope| {
            let worker = scope.spawn(|| -> Result<Report, LabError> {
                client.enter_current_thread()?;
                let mut rng = rand::thread_rng();
                let mut report = Report::default();
                let start = Instant::now();
                let mut next_tick = Duration::from_secs(1);
                while start.elapsed() < duration && !stop() {
                    for (i, session) in sessions.iter().enumerate() {
                        match traffic::request(i, session, &mut rng) {
                            Ok(Some(obs)) => report.observations.push(obs),
                            Ok(None) => report.lost += 1,
                            Err(_) => report.errors += 1,
                        }
                    }
                    if start.elapsed() >= next_tick {
                        tick(start.elapsed(), &report);
                        next_tick += Duration::from_secs(1);
                    }
                }
                Ok(report)
            });
            worker.join().expect("lab traffic thread panicked")
        })
    }

    /// Sends the rate-shaped `sessions` from the client for `duration` (or until `stop`).
    pub fn drive_load(
        &self,
        sessions: &[load::Loaded],
        duration: Duration,
        stop: &std::sync::atomic::AtomicBool,
        report: &std::sync::Mutex<load::LoadReport>,
    ) -> Result<(), LabError> {
        std::thread::scope(|s| {
            s.spawn(|| -> Result<(), LabError> {
                self.topology.client.enter_current_thread()?;
                load::run(sessions, duration, stop, report).map_err(|source| LabError::Io {
                    path: PathBuf::from("lab load generator"),
                    source,
                })
            })
            .join()
            .expect("lab load thread panicked")
        })
    }

    /// Runs one QUIC connection from the client for `duration` (or until `stop`), moving it to
    /// a new source port and address every second, and records who answered in `report`.
    pub fn drive_quic(
        &self,
        duration: Duration,
        stop: &(dyn Fn() -> bool + Sync),
        report: &std::sync::Mutex<quic::RebindingReport>,
    ) {
        let run = || -> Result<(), String> {
            self.topology
                .client
                .enter_current_thread()
                .map_err(|e| e.to_string())?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(async {
                    let from = [topology::CLIENT4.into(), topology::client_alias4(1).into()];
                    let bind = std::net::SocketAddr::new(from[0], 0);
                    let endpoint = quic::client(bind, &self.quic_cert)?;
                    let server = std::net::SocketAddr::new(VIP4.into(), QUIC_PORT);
                    let deadline = Instant::now() + duration;
                    let every = Duration::from_secs(1);
                    quic::rebinding_connection(
                        &endpoint, server, &from, every, deadline, stop, report,
                    )
                    .await
                })
                .map_err(|e| e.to_string())
        };
        // A thread of its own: entering the client's namespace must not move the caller.
        let error = std::thread::scope(|s| s.spawn(run).join())
            .unwrap_or_else(|_| Err("the QUIC client panicked".into()))
            .err();
        report.lock().unwrap_or_else(|e| e.into_inner()).error = error;
    }
}
