//! The predictive lab's load: header-mode sessions sending at a rate that follows a profile
//! (a ramp, a periodic wave), without waiting for answers, and counting who answered. The
//! control loop sees them through the session counters like any other traffic.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use shardline_common::packet::encode_header;

use crate::{
    echo::{split_prefix, ID_LEN},
    topology::{CLIENT4, VIP4},
    HEADER_PORT,
};

/// How a session's rate changes over time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// Linear from `from` to `to` packets per second over `secs`, then flat.
    Ramp {
        /// Start rate.
        from: f64,
        /// End rate.
        to: f64,
        /// Ramp length, seconds.
        secs: f64,
    },
    /// Geometric growth from `from` to `to` packets per second over `secs` (the rate is
    /// multiplied by the same factor every second: a load that grows by its own size, as a
    /// session going viral does), then flat.
    Exponential {
        /// Start rate (positive).
        from: f64,
        /// End rate.
        to: f64,
        /// Growth length, seconds.
        secs: f64,
    },
    /// `base + amplitude × sin(2π t / period)`.
    Periodic {
        /// Mean rate.
        base: f64,
        /// Swing.
        amplitude: f64,
        /// Period, seconds.
        period: f64,
    },
}

impl Shape {
    /// Packets per second at `t` seconds.
    pub fn rate(&self, t: f64) -> f64 {
        match *self {
            Shape::Ramp { from, to, secs } => from + (to - from) * (t / secs).clamp(0.0, 1.0),
            Shape::Exponential { from, to, secs } => {
                from * (to / from).powf((t / secs).clamp(0.0, 1.0))
            }
            Shape::Periodic {
                base,
                amplitude,
                period,
            } => (base + amplitude * (std::f64::consts::TAU * t / period).sin()).max(0.0),
        }
    }
}

/// One loaded session of the `kv` service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loaded {
    /// Header session id.
    pub id: u64,
    /// Its rate over time.
    pub shape: Shape,
}

/// What the load generator saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Per session id: requests sent.
    pub sent: BTreeMap<u64, u64>,
    /// Per session id: answers per backend id.
    pub answers: BTreeMap<u64, BTreeMap<u32, u64>>,
    /// Per second since the start: answers per backend, all sessions.
    pub per_second: Vec<BTreeMap<u32, u64>>,
    /// Per session id: requests a backend refused over its capacity limit (not in `answers`).
    pub refused: BTreeMap<u64, u64>,
    /// Per error: requests the client's socket failed to send (counted in `sent`, so in
    /// [`LoadReport::lost`] too). A connected UDP socket fails its next send after an ICMP
    /// error comes back (`ConnectionRefused` for a port unreachable): this names the cause.
    pub send_errors: BTreeMap<String, u64>,
}

impl LoadReport {
    /// Per session id: requests neither answered nor refused.
    pub fn lost(&self) -> BTreeMap<u64, u64> {
        self.sent
            .iter()
            .map(|(id, sent)| {
                let answered: u64 = self.answers.get(id).map_or(0, |a| a.values().sum());
                let refused = self.refused.get(id).copied().unwrap_or(0);
                (*id, sent.saturating_sub(answered + refused))
            })
            .collect()
    }
}

/// Sends every session's load until `duration` passes or `stop` is set; updates `report` as
/// answers arrive. Call from a thread already in the client's namespace.
pub fn run(
    sessions: &[Loaded],
    duration: Duration,
    stop: &AtomicBool,
    report: &Mutex<LoadReport>,
) -> std::io::Result<()> {
    let destination = SocketAddr::new(VIP4.into(), HEADER_PORT);
    let sockets: Vec<UdpSocket> = sessions
        .iter()
        .map(|_| {
            let s = UdpSocket::bind(SocketAddr::new(CLIENT4.into(), 0))?;
            s.connect(destination)?;
            crate::sockbuf::grow_receive_buffer(&s, crate::sockbuf::BUSY_UDP_RCVBUF)?;
            s.set_read_timeout(Some(Duration::from_millis(50)))?;
            Ok(s)
        })
        .collect::<std::io::Result<_>>()?;
    let start = Instant::now();
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for (session, socket) in sessions.iter().zip(&sockets) {
            let done = &done;
            scope.spawn(move || receive(session.id, socket, start, done, report));
        }
        let mut sent = vec![0u64; sessions.len()];
        let mut send_errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut key: u64 = 0x5eed;
        let mut owed = vec![0f64; sessions.len()];
        let step = Duration::from_millis(5);
        let mut last = start;
        while start.elapsed() < duration && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(step);
            let now = Instant::now();
            let dt = now.duration_since(last).as_secs_f64();
            last = now;
            let t = now.duration_since(start).as_secs_f64();
            for (i, session) in sessions.iter().enumerate() {
                owed[i] += session.shape.rate(t) * dt;
                while owed[i] >= 1.0 {
                    owed[i] -= 1.0;
                    key = shardline_common::hash::mix64(key);
                    let mut payload = encode_header(session.id, key).to_vec();
                    payload.extend_from_slice(b"shardline load");
                    if let Err(e) = sockets[i].send(&payload) {
                        *send_errors.entry(format!("{:?}", e.kind())).or_default() += 1;
                    }
                    sent[i] += 1;
                }
            }
            let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
            for (i, session) in sessions.iter().enumerate() {
                r.sent.insert(session.id, sent[i]);
            }
            r.send_errors.clone_from(&send_errors);
        }
        // The last requests' answers are still on their way: wait for them as a request
        // session would, so none counts as lost for having been sent last.
        std::thread::sleep(crate::traffic::REPLY_TIMEOUT);
        done.store(true, Ordering::Relaxed);
    });
    Ok(())
}

fn receive(
    id: u64,
    socket: &UdpSocket,
    start: Instant,
    done: &AtomicBool,
    report: &Mutex<LoadReport>,
) {
    let mut buf = [0u8; 2048];
    while !done.load(Ordering::Relaxed) {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        if n < ID_LEN {
            continue;
        }
        let (backend, refused, _) =
            split_prefix(u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]));
        let mut r = report.lock().unwrap_or_else(|e| e.into_inner());
        if refused {
            *r.refused.entry(id).or_default() += 1;
            continue;
        }
        let second = start.elapsed().as_secs() as usize;
        *r.answers.entry(id).or_default().entry(backend).or_default() += 1;
        if r.per_second.len() <= second {
            r.per_second.resize(second + 1, BTreeMap::new());
        }
        *r.per_second[second].entry(backend).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let ramp = Shape::Ramp {
            from: 100.0,
            to: 500.0,
            secs: 40.0,
        };
        assert_eq!(ramp.rate(0.0), 100.0);
        assert_eq!(ramp.rate(20.0), 300.0);
        assert_eq!(ramp.rate(100.0), 500.0);
        let growth = Shape::Exponential {
            from: 10.0,
            to: 1000.0,
            secs: 10.0,
        };
        assert!((growth.rate(5.0) - 100.0).abs() < 1e-9);
        assert!((growth.rate(7.5) / growth.rate(6.5) - 10f64.powf(0.2)).abs() < 1e-9);
        assert!((growth.rate(30.0) - 1000.0).abs() < 1e-9);
        let wave = Shape::Periodic {
            base: 100.0,
            amplitude: 150.0,
            period: 20.0,
        };
        assert!((wave.rate(5.0) - 250.0).abs() < 1e-9);
        assert_eq!(wave.rate(15.0), 0.0);
    }
}
