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
    traffic::{self, Outcome},
    Lab, LabError, QUIC_PORT,
};

/// How long the request sessions pause after a backend refused a request over its capacity.
pub const REFUSED_BACKOFF: Duration = Duration::from_millis(50);

/// What the client observed.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every answered request.
    pub observations: Vec<traffic::Observation>,
    /// Requests that got no answer (every one of `losses`).
    pub lost: u64,
    /// Every request that got no answer, with when (since the start of the drive) and why.
    pub losses: Vec<(Duration, traffic::Loss)>,
    /// Requests that failed locally (socket errors).
    pub errors: u64,
}

impl Report {
    /// Lost requests by reason.
    pub fn lost_by_reason(&self) -> BTreeMap<traffic::LossReason, u64> {
        let mut out = BTreeMap::new();
        for (_, loss) in &self.losses {
            *out.entry(loss.reason).or_default() += 1;
        }
        out
    }

    /// Lost requests without a reported reason (see [`traffic::LossReason::explained`]),
    /// counting those a socket error kept from being sent.
    pub fn unexplained(&self) -> u64 {
        let explained = |l: &&(Duration, traffic::Loss)| l.1.reason.explained();
        self.lost + self.errors - self.losses.iter().filter(explained).count() as u64
    }

    /// What the lab prints: `lost N` counts the losses without a reported reason, each
    /// reason's count in parentheses (socket errors among them); losses with one follow on their own, as in `lost 0, not
    /// served with a reason 12 (refused by a saturated backend: 12)`.
    pub fn lost_summary(&self) -> String {
        let by_reason = self.lost_by_reason();
        let list = |explained: bool| -> (u64, String) {
            let picked: Vec<(&traffic::LossReason, &u64)> = by_reason
                .iter()
                .filter(|(r, _)| r.explained() == explained)
                .collect();
            let total = picked.iter().map(|(_, n)| **n).sum();
            let text: Vec<String> = picked
                .iter()
                .map(|(r, n)| format!("{}: {n}", r.label()))
                .collect();
            (total, text.join(", "))
        };
        let (lost, mut why) = list(false);
        if self.errors > 0 {
            let sep = if why.is_empty() { "" } else { ", " };
            why += &format!("{sep}socket error: {}", self.errors);
        }
        let mut out = format!("lost {}", lost + self.errors);
        if !why.is_empty() {
            out += &format!(" ({why})");
        }
        let (explained, why) = list(true);
        if explained > 0 {
            out += &format!(", not served with a reason {explained} ({why})");
        }
        out
    }

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
                        match traffic::attempt(i, session, &mut rng) {
                            Ok(Outcome::Answered(obs)) => report.observations.push(obs),
                            Ok(Outcome::Lost(loss)) => {
                                report.lost += 1;
                                report.losses.push((start.elapsed(), loss));
                                if loss.reason == traffic::LossReason::Refused {
                                    // As a client honouring a 503: retrying at once would
                                    // only pile more work on the saturated backend.
                                    std::thread::sleep(REFUSED_BACKOFF);
                                }
                            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::{Loss, LossReason};

    fn loss(reason: LossReason) -> (Duration, Loss) {
        let backend = (reason == LossReason::Refused).then_some(2);
        (
            Duration::from_secs(1),
            Loss {
                session: 0,
                reason,
                backend,
            },
        )
    }

    #[test]
    fn losses_are_printed_by_reason_and_only_unreported_ones_count_as_lost() {
        let mut report = Report::default();
        assert_eq!(report.lost_summary(), "lost 0");
        report.losses = vec![loss(LossReason::Refused), loss(LossReason::Refused)];
        report.lost = 2;
        assert_eq!(report.unexplained(), 0);
        assert_eq!(
            report.lost_summary(),
            "lost 0, not served with a reason 2 (refused by a saturated backend: 2)"
        );
        report.losses.push(loss(LossReason::Timeout));
        report.lost = 3;
        report.errors = 1;
        assert_eq!(report.unexplained(), 2, "the timeout and the socket error");
        assert_eq!(
            report.lost_summary(),
            "lost 2 (no answer in time: 1, socket error: 1), not served with a reason 2 \
             (refused by a saturated backend: 2)"
        );
    }
}
