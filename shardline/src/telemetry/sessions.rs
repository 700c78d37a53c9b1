//! Bounded per-session series: the top K sessions by load keep their own series, the rest are
//! folded into one, so a million sessions do not make a million series. [`select`] is pure
//! (unit tested here); [`super::Telemetry::publish_sessions`] applies a selection to the
//! families and removes the series of sessions that left the top K.

use super::SessionLabels;

/// The label value of the one series that aggregates every session outside the top K (both
/// `service` and `session` carry it).
pub const OTHER: &str = "_other";

/// One session's values as the control loop publishes them.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionRow {
    /// Its labels.
    pub labels: SessionLabels,
    /// Load of the last tick (packets per second); what the top K ranks by.
    pub rate: f64,
    /// Shards it has.
    pub shards: u8,
    /// Recent forecast error (sMAPE).
    pub error: f64,
}

/// The sessions outside the top K, summed up.
#[derive(Clone, Debug, PartialEq)]
pub struct Rest {
    /// How many sessions are folded together.
    pub sessions: usize,
    /// Their shards, summed.
    pub shards: u64,
    /// Their load, summed (NaN loads count as 0).
    pub rate: f64,
    /// Their forecast error weighted by load (a plain mean when they carry no load; NaN when
    /// none has a finite error).
    pub error: f64,
}

/// What one publish exports.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// The `k` sessions with the highest load, highest first (ties: by labels).
    pub top: Vec<SessionRow>,
    /// The others, if there are any.
    pub rest: Option<Rest>,
}

/// Picks the top `k` of `rows` by load and aggregates the others. A NaN load ranks last.
pub fn select(mut rows: Vec<SessionRow>, k: usize) -> Selection {
    let load = |r: &SessionRow| {
        if r.rate.is_nan() {
            f64::NEG_INFINITY
        } else {
            r.rate
        }
    };
    rows.sort_by(|a, b| {
        load(b).total_cmp(&load(a)).then_with(|| {
            (&a.labels.service, &a.labels.session).cmp(&(&b.labels.service, &b.labels.session))
        })
    });
    let others = rows.split_off(k.min(rows.len()));
    Selection {
        top: rows,
        rest: (!others.is_empty()).then(|| fold(&others)),
    }
}

fn fold(others: &[SessionRow]) -> Rest {
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    let rated: Vec<_> = others.iter().filter(|r| r.error.is_finite()).collect();
    let weight: f64 = rated.iter().map(|r| finite(r.rate)).sum();
    let error = if rated.is_empty() {
        f64::NAN
    } else if weight > 0.0 {
        rated.iter().map(|r| finite(r.rate) * r.error).sum::<f64>() / weight
    } else {
        rated.iter().map(|r| r.error).sum::<f64>() / rated.len() as f64
    };
    Rest {
        sessions: others.len(),
        shards: others.iter().map(|r| u64::from(r.shards)).sum(),
        rate: others.iter().map(|r| finite(r.rate)).sum(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(session: u32, rate: f64, shards: u8, error: f64) -> SessionRow {
        SessionRow {
            labels: SessionLabels {
                service: "kv".into(),
                session: session.to_string(),
            },
            rate,
            shards,
            error,
        }
    }

    #[test]
    fn the_top_k_by_load_keep_their_series_and_the_rest_fold_into_one() {
        let rows = vec![
            row(1, 10.0, 1, 0.1),
            row(2, 500.0, 4, 0.2),
            row(3, 30.0, 2, 0.5),
            row(4, f64::NAN, 1, f64::NAN),
            row(5, 200.0, 3, 0.3),
        ];
        let s = select(rows, 2);
        let top: Vec<_> = s.top.iter().map(|r| r.labels.session.as_str()).collect();
        assert_eq!(top, ["2", "5"]);
        let rest = s.rest.expect("three sessions are folded");
        assert_eq!((rest.sessions, rest.shards, rest.rate), (3, 4, 40.0));
        // Load-weighted: (10 * 0.1 + 30 * 0.5) / 40; the NaN session carries no weight.
        assert!((rest.error - 0.4).abs() < 1e-12, "{}", rest.error);
    }

    #[test]
    fn a_million_sessions_make_k_plus_one_series() {
        let rows: Vec<_> = (0..1_000_000)
            .map(|i| row(i, f64::from(i % 977), 1, 0.1))
            .collect();
        let s = select(rows, 100);
        assert_eq!(s.top.len(), 100);
        assert!(s.top.iter().all(|r| r.rate == 976.0));
        assert_eq!(s.rest.unwrap().sessions, 999_900);
    }

    #[test]
    fn fewer_sessions_than_k_fold_nothing_and_k_zero_folds_everything() {
        let rows = vec![row(1, 1.0, 1, 0.0), row(2, 2.0, 1, 0.0)];
        let s = select(rows.clone(), 100);
        assert_eq!((s.top.len(), s.rest), (2, None));
        let s = select(rows, 0);
        assert!(s.top.is_empty());
        assert_eq!(s.rest.unwrap().sessions, 2);
    }

    #[test]
    fn idle_sessions_average_their_error_and_ties_rank_by_label() {
        let s = select(
            vec![
                row(9, 0.0, 1, 0.2),
                row(3, 0.0, 1, 0.4),
                row(1, 0.0, 1, 0.6),
            ],
            1,
        );
        assert_eq!(s.top[0].labels.session, "1");
        assert!((s.rest.unwrap().error - 0.3).abs() < 1e-12);
    }
}
