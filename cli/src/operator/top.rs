//! `shardline top`: sessions with their shard sets, shard counts, rates and forecasts, and
//! the dataplane's packet rates, refreshed every interval (ratatui). `--once` prints one frame
//! as text, for scripts and tests.

use std::time::{Duration, Instant};

use ratatui::{
    backend::TestBackend,
    crossterm::event::{self, Event, KeyCode},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Cell, Paragraph, Row, Table},
    Frame, Terminal,
};
use shardline::api::views::{SessionView, StatusView};

use super::{
    tables::{decimal, ids, insight_cell, opt},
    CliError, Client,
};

/// One refresh's data.
#[derive(Debug)]
pub struct View {
    /// `/v1/status`.
    pub status: StatusView,
    /// `/v1/sessions`.
    pub sessions: Vec<SessionView>,
    /// Dataplane packets per second since the last refresh: forwarded, dropped.
    pub rates: Option<(f64, f64)>,
}

/// Runs the view until `q`, or prints one frame with `once`.
pub fn run(client: &Client, once: bool, interval: f64) -> Result<(), CliError> {
    if !(0.1..=3600.0).contains(&interval) {
        return Err(CliError::Usage(
            "--interval must be 0.1 to 3600 seconds".into(),
        ));
    }
    let mut previous: Option<(Instant, StatusView)> = None;
    let mut fetch = || -> Result<View, CliError> {
        let status: StatusView = client.get("/v1/status")?.view;
        let sessions = client.get("/v1/sessions")?.view;
        let now = Instant::now();
        let rates = previous.as_ref().and_then(|(at, before)| {
            let dt = now.duration_since(*at).as_secs_f64();
            let (a, b) = (before.dataplane.as_ref()?, status.dataplane.as_ref()?);
            let per_sec = |a: u64, b: u64| b.saturating_sub(a) as f64 / dt;
            Some((
                per_sec(a.forwarded, b.forwarded),
                per_sec(a.dropped, b.dropped),
            ))
        });
        previous = Some((now, status.clone()));
        Ok(View {
            status,
            sessions,
            rates,
        })
    };
    if once {
        print!("{}", render_text(&fetch()?, 120, 30));
        return Ok(());
    }
    let mut terminal =
        ratatui::try_init().map_err(|e| CliError::Local(format!("the terminal: {e}")))?;
    let result = (|| -> Result<(), CliError> {
        loop {
            let view = fetch()?;
            terminal
                .draw(|f| draw(f, &view))
                .map_err(|e| CliError::Local(format!("drawing: {e}")))?;
            let deadline = Instant::now() + Duration::from_secs_f64(interval);
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                if !event::poll(left).map_err(|e| CliError::Local(e.to_string()))? {
                    break;
                }
                if let Event::Key(key) =
                    event::read().map_err(|e| CliError::Local(e.to_string()))?
                {
                    if matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}

/// One frame of `view` as `width` x `height` text.
pub fn render_text(view: &View, width: u16, height: u16) -> String {
    let mut terminal =
        Terminal::new(TestBackend::new(width, height)).expect("an in-memory terminal");
    terminal.draw(|f| draw(f, view)).expect("drawing in memory");
    let buffer = terminal.backend().buffer();
    let mut out = String::new();
    for y in 0..height {
        let line: String = (0..width).map(|x| buffer[(x, y)].symbol()).collect();
        out += line.trim_end();
        out.push('\n');
    }
    out
}

fn draw(f: &mut Frame, view: &View) {
    let [head, body] =
        Layout::vertical([Constraint::Length(4), Constraint::Min(3)]).areas(f.area());
    let s = &view.status;
    let c = &s.cluster;
    let rates = match view.rates {
        Some((fwd, drop)) => format!("{fwd:.0} pps forwarded, {drop:.0} pps dropped"),
        None => "rates after the next refresh".into(),
    };
    let lines = vec![
        Line::from(format!(
            "node {} {} term {} leader {}  |  generation {}  |  {} backends ({} healthy, {} draining)",
            c.node, c.role, c.term, opt(c.leader), s.generation,
            s.backends, s.healthy_backends, s.draining_backends
        )),
        Line::from(format!(
            "{} placed sessions, {} forecast  |  dataplane: {rates}  |  q quits",
            s.placed_sessions, s.forecast_sessions
        )),
    ];
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" shardline top "),
        ),
        head,
    );

    let mut sessions: Vec<&SessionView> = view.sessions.iter().collect();
    // Sessions the loop has not seen (or whose rate is not a number) sort last.
    let rate = |v: &SessionView| {
        v.insight
            .as_ref()
            .map(|i| i.rate)
            .filter(|r| r.is_finite())
            .unwrap_or(-1.0)
    };
    sessions.sort_by(|a, b| rate(b).total_cmp(&rate(a)));
    let header = [
        "SESSION",
        "SHARD SET",
        "SHARDS",
        "RATE",
        "FORECAST",
        "UPPER",
        "MODEL",
        "ERROR",
        "LAST RE-SHARD",
    ];
    let rows = sessions.iter().map(|v| {
        let i = v.insight.as_ref();
        let event = match i.and_then(|i| i.events.last()) {
            Some(last) => format!("{} -> {}: {}", last.from, last.to, last.reason),
            None => "-".into(),
        };
        Row::new(vec![
            Cell::from(format!("{}/{}", v.service, v.session)),
            Cell::from(if v.backends.is_empty() {
                "default".into()
            } else {
                ids(&v.backends)
            }),
            Cell::from(insight_cell(i, |i| i.shards.to_string())),
            Cell::from(insight_cell(i, |i| decimal(i.rate))),
            Cell::from(insight_cell(i, |i| decimal(i.forecast))),
            Cell::from(insight_cell(i, |i| decimal(i.upper))),
            Cell::from(insight_cell(i, |i| i.model.clone())),
            Cell::from(insight_cell(i, |i| {
                if i.error.is_finite() {
                    format!("{:.3}", i.error)
                } else {
                    "-".into()
                }
            })),
            Cell::from(event),
        ])
    });
    let widths = [
        Constraint::Length(16),
        Constraint::Length(14),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(14),
        Constraint::Length(7),
        Constraint::Min(10),
    ];
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::default().add_modifier(Modifier::BOLD)))
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(format!(" sessions ({}) ", sessions.len())),
        );
    f.render_widget(table, body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline::api::views::{ClusterStatus, ReshardEvent, SessionInsight};

    fn session(number: u64, backends: Vec<u32>, insight: SessionInsight) -> SessionView {
        SessionView {
            service: "kv".into(),
            session: number,
            backends,
            insight: Some(insight),
            ..SessionView::default()
        }
    }

    #[test]
    fn a_frame_shows_the_sessions_busiest_first() {
        let status = StatusView {
            version: "0.1.0".into(),
            uptime_secs: 1,
            writable: true,
            cluster: ClusterStatus {
                node: 1,
                role: "leader".into(),
                term: 3,
                leader: Some(1),
                applied: 0,
                members: Vec::new(),
            },
            generation: 7,
            services: 1,
            backends: 4,
            healthy_backends: 4,
            draining_backends: 0,
            placed_sessions: 1,
            forecast_sessions: 2,
            dataplane: None,
        };
        let idle = SessionInsight {
            shards: 1,
            rate: 10.0,
            forecast: 11.0,
            upper: 12.0,
            model: "ewma".into(),
            error: 0.05,
            ..SessionInsight::default()
        };
        let busy = SessionInsight {
            shards: 2,
            rate: 900.0,
            forecast: 950.0,
            upper: 1000.0,
            model: "holt".into(),
            error: 0.1,
            events: vec![ReshardEvent {
                at_ms: 5,
                from: 1,
                to: 2,
                reason: "forecast peak".into(),
            }],
            ..SessionInsight::default()
        };
        let view = View {
            status,
            sessions: vec![session(1, vec![], idle), session(42, vec![1, 2], busy)],
            rates: Some((1234.0, 5.0)),
        };
        let text = render_text(&view, 120, 12);
        assert!(text.contains("node 1 leader term 3 leader 1"), "{text}");
        assert!(text.contains("1234 pps forwarded"), "{text}");
        let busy = text.find("kv/42").expect("kv/42 shown");
        let idle = text.find("kv/1 ").expect("kv/1 shown");
        assert!(busy < idle, "busiest first:\n{text}");
        assert!(text.contains("1 -> 2: forecast peak"), "{text}");
        assert!(text.contains("0.100"), "{text}");
    }
}
