//! Insights: each session's recent samples with the forecasts and bounds made for them, its
//! running forecast error and its reshard events, recorded every tick and read by the API and
//! the metrics.

use super::Core;
use crate::{control::insight::SessionInsight, state::SessionRef};

impl Core {
    pub(super) fn record_insights(&mut self, at_ms: u64) {
        let h = self.selector.horizon;
        for (i, extra) in self.extras.iter_mut().enumerate() {
            let actual = self.samples[i];
            if !actual.is_finite() {
                continue;
            }
            let selector = self.states[i].selector();
            extra.rate = actual;
            // The forecast made `horizon` ticks ago was for now.
            if extra.history.len() >= h {
                let then = extra.history[extra.history.len() - h].forecast;
                let denom = (actual.abs() + then.abs()) / 2.0;
                let e = if denom > 0.0 {
                    (actual - then).abs() / denom
                } else {
                    0.0
                };
                extra.error = 0.9 * extra.error + 0.1 * e;
            }
            extra.record(at_ms, actual, selector);
        }
    }

    /// The insight of every session that had a sample this tick.
    pub fn insights(&self) -> impl Iterator<Item = SessionInsight> + '_ {
        (0..self.refs.len())
            .filter(|&i| self.samples[i].is_finite())
            .map(|i| self.insight_of(i, true))
    }

    /// Each session that had a sample this tick with its shards, load and forecast error:
    /// what the per-session metrics take, without copying an insight.
    pub fn tick_rows(&self) -> impl Iterator<Item = (&SessionRef, u8, f64, f64)> + '_ {
        (0..self.refs.len())
            .filter(|&i| self.samples[i].is_finite())
            .map(|i| {
                let e = &self.extras[i];
                (&self.refs[i], self.states[i].shards(), e.rate, e.error)
            })
    }

    /// `session`'s insight with its history, once the loop has a sample of it.
    pub fn insight(&self, session: &SessionRef) -> Option<SessionInsight> {
        let i = *self.index.get(session)?;
        (!self.extras[i].history.is_empty()).then(|| self.insight_of(i, true))
    }

    /// The insight of every session the loop has a sample of, without its history and with
    /// its last event only.
    pub fn summaries(&self) -> impl Iterator<Item = SessionInsight> + '_ {
        (0..self.refs.len())
            .filter(|&i| !self.extras[i].history.is_empty())
            .map(|i| self.insight_of(i, false))
    }

    fn insight_of(&self, i: usize, full: bool) -> SessionInsight {
        let selector = self.states[i].selector();
        let e = &self.extras[i];
        SessionInsight {
            session: self.refs[i].clone(),
            shards: self.states[i].shards(),
            rate: e.rate,
            forecast: selector.forecast(),
            upper: selector.upper(),
            model: selector.chosen().to_owned(),
            error: e.error,
            history: match full {
                true => e.history.iter().copied().collect(),
                false => Vec::new(),
            },
            events: match full {
                true => e.events.clone(),
                false => e.events.last().cloned().into_iter().collect(),
            },
        }
    }
}
