//! How each API view prints for people: aligned tables and short summaries. The cells say
//! `-` for what the API leaves out (`null`), and floats get one decimal.

use std::fmt::Display;

use shardline::api::views::{
    BackendView, ClusterStatus, DrainView, Owner, OwnerTable, Owners, PoolMemberView, Response,
    ServiceView, SessionDetail, SessionInsight, SessionView, StatusView,
};

/// Left-aligned columns, two spaces apart.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// An optional value as a table cell: `-` when absent (the API's `null`).
pub fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// A rate or forecast as a table cell: one decimal; `-` if it is not finite (the API's JSON
/// carries such a number as `null`).
pub fn decimal(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "-".into()
    }
}

/// A shard set as a table cell: backend ids, comma separated (empty: the default table).
pub fn ids(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// One field of a session's insight as a cell: `-` until the control loop has seen it.
pub fn insight_cell(
    i: Option<&SessionInsight>,
    field: impl Fn(&SessionInsight) -> String,
) -> String {
    i.map_or_else(|| "-".into(), field)
}

/// What a write answered: the generation it made.
pub fn written(v: &Response) -> String {
    match v.placement {
        Some(p) => format!(
            "ok: generation {}, placement generation {p}\n",
            v.generation
        ),
        None => format!("ok: generation {}\n", v.generation),
    }
}

/// `shardline backends drain ID`: the write, then what the drain waits for. Running it again
/// on a draining backend only reports (a drain that timed out stays ended).
pub fn drained(v: &DrainView) -> String {
    let p = &v.progress;
    let mut out = written(&v.written);
    if p.timed_out {
        out += &format!(
            "backend {} drained: the drain timeout ended it; it is in no shard set and its \
             flows are re-decided\n",
            v.backend
        );
    } else {
        out += &format!(
            "backend {} draining: waiting for {} established flows and {} placed sessions \
             (at most control.drain_timeout_secs)\n",
            v.backend,
            opt(p.flows_left),
            p.placed_sessions
        );
    }
    out
}

/// `shardline status`: node, cluster, counts, dataplane and API.
pub fn status(v: &StatusView) -> String {
    let c = &v.cluster;
    let mut out = format!(
        "node {} ({}, term {}), leader {}, applied {}\n",
        c.node,
        c.role,
        c.term,
        opt(c.leader),
        c.applied
    );
    out += &format!(
        "generation {}, {} services, {} backends ({} healthy, {} draining), {} placed sessions, {} forecast\n",
        v.generation, v.services, v.backends, v.healthy_backends, v.draining_backends,
        v.placed_sessions, v.forecast_sessions
    );
    if let Some(d) = &v.dataplane {
        out += &format!(
            "dataplane: {} forwarded, {} passed, {} dropped\n",
            d.forwarded, d.passed, d.dropped
        );
    }
    out += &format!(
        "api: {}, version {}, up {} s\n",
        if v.writable {
            "writable"
        } else {
            "read-only (no token configured)"
        },
        v.version,
        v.uptime_secs
    );
    out
}

/// `shardline backends`: one row per backend.
pub fn backend_table(v: &[BackendView]) -> String {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    backend_table_at(v, now_ms)
}

/// [`backend_table`] at `now_ms` (Unix ms): PROBE is this node's probe verdict and how long
/// it has held (`down 12s`), FAILS the failed probes in a row.
pub fn backend_table_at(v: &[BackendView], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|b| {
            let probe = b.probe.as_ref().map(|p| {
                let verdict = if p.healthy { "up" } else { "down" };
                let held = now_ms.saturating_sub(p.since_ms) / 1000;
                format!("{verdict} {}", duration(held))
            });
            vec![
                b.id.to_string(),
                opt(b.ipv4),
                opt(b.ipv6),
                b.mac.clone(),
                b.weight.to_string(),
                b.effective_weight.to_string(),
                b.healthy.to_string(),
                opt(probe),
                opt(b.probe.as_ref().map(|p| p.consecutive_failures)),
                votes(&b.votes),
                b.draining.to_string(),
                opt(b.packets),
                opt(b.bytes),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "IPV4",
            "IPV6",
            "MAC",
            "WEIGHT",
            "EFFECTIVE",
            "HEALTHY",
            "PROBE",
            "FAILS",
            "VOTES",
            "DRAINING",
            "PACKETS",
            "BYTES",
        ],
        &rows,
    )
}

/// The LB nodes' health votes as `down/voting down` (`-`: no node votes on it).
fn votes(v: &std::collections::BTreeMap<u64, bool>) -> String {
    if v.is_empty() {
        return "-".into();
    }
    let down = v.values().filter(|up| !**up).count();
    format!("{down}/{} down", v.len())
}

/// Seconds as the largest two units: `45s`, `3m05s`, `2h10m`, `4d03h`.
fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `shardline services`: one row per service.
pub fn services(v: &[ServiceView]) -> String {
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|s| {
            vec![
                s.id.to_string(),
                s.name.clone(),
                s.vip.to_string(),
                s.port.to_string(),
                s.protocol.to_string(),
                s.mode.to_string(),
                s.forward.to_string(),
                pool_cell(s.pool.as_deref()),
                match s.ring_size {
                    0 => "default".into(),
                    n => n.to_string(),
                },
                s.placed_sessions.to_string(),
                opt(s.packets),
            ]
        })
        .collect();
    table(
        &[
            "ID", "NAME", "VIP", "PORT", "PROTO", "MODE", "FORWARD", "POOL", "RING", "PLACED",
            "PACKETS",
        ],
        &rows,
    )
}

/// A service's pool as `id:weight` per member, marked `(probe down)` when failing this
/// service's probe (out of this pool only), `(down)` when failing its own checks and
/// `(draining)` when draining or weighted 0 here; `all` without a pool.
fn pool_cell(pool: Option<&[PoolMemberView]>) -> String {
    let Some(pool) = pool else {
        return "all".into();
    };
    if pool.is_empty() {
        return "none".into();
    }
    let members: Vec<String> = pool
        .iter()
        .map(|m| {
            let mark = if m.probe_failing {
                "(probe down)"
            } else if !m.healthy {
                "(down)"
            } else if m.draining || m.weight == 0 {
                "(draining)"
            } else {
                ""
            };
            format!("{}:{}{mark}", m.id, m.weight)
        })
        .collect();
    members.join(" ")
}

/// `shardline sessions`: one row per session.
pub fn sessions(v: &[SessionView]) -> String {
    let rows: Vec<Vec<String>> = v
        .iter()
        .map(|s| {
            let i = s.insight.as_ref();
            vec![
                s.service.clone(),
                s.session.to_string(),
                ids(&s.backends),
                s.generation.to_string(),
                opt(s.meta.class.as_ref()),
                insight_cell(i, |i| i.shards.to_string()),
                insight_cell(i, |i| decimal(i.rate)),
                insight_cell(i, |i| decimal(i.forecast)),
                insight_cell(i, |i| decimal(i.upper)),
                insight_cell(i, |i| i.model.clone()),
            ]
        })
        .collect();
    table(
        &[
            "SERVICE", "SESSION", "BACKENDS", "GEN", "CLASS", "SHARDS", "RATE", "FORECAST",
            "UPPER", "MODEL",
        ],
        &rows,
    )
}

/// `shardline cluster`: the term, this node and one row per member.
pub fn members(v: &ClusterStatus) -> String {
    let rows: Vec<Vec<String>> = v
        .members
        .iter()
        .map(|m| {
            let role = if Some(m.id) == v.leader {
                "leader"
            } else if m.voter {
                "voter"
            } else {
                "learner"
            };
            vec![m.id.to_string(), m.addr.clone(), role.into()]
        })
        .collect();
    format!("term {}, this node {} ({})\n", v.term, v.node, v.role)
        + &table(&["ID", "ADDR", "ROLE"], &rows)
}

/// `shardline sessions show`: placement, forecast, state keys, recent history, re-shards.
/// `shardline sessions owners`: the key's owner now and, in the handoff window, before.
pub fn owners(o: &Owners) -> String {
    let who = |b: Option<u32>| b.map_or("none".to_owned(), |b| format!("backend {b}"));
    let how = |owner: &Owner| match owner.table {
        OwnerTable::Placed => format!(
            "shard set {} (generation {})",
            ids(&owner.backends),
            owner.generation
        ),
        OwnerTable::Pool => "the service's pool ring".to_owned(),
        OwnerTable::Default => "the default table".to_owned(),
    };
    let mut out = format!(
        "key {} of session {}/{}\n  now      {} by {}\n",
        o.key,
        o.service,
        o.session,
        who(o.current.backend),
        how(&o.current)
    );
    match &o.previous {
        Some(p) => {
            out += &format!(
                "  before   {} by {} (handoff window until {} ms)\n",
                who(p.owner.backend),
                how(&p.owner),
                p.until_unix_ms
            );
            out += if o.moved {
                "  moved: the new owner pulls this key's data from the previous one\n"
            } else {
                "  not moved by the last re-shard\n"
            };
        }
        None => out += "  before   no re-shard in the handoff window\n",
    }
    out
}

pub fn session_detail(d: &SessionDetail) -> String {
    let v = &d.view;
    let mut out = format!("session {}/{}\n", v.service, v.session);
    out += &format!(
        "  shard set   {} (generation {})\n",
        if v.backends.is_empty() {
            "default table".into()
        } else {
            ids(&v.backends)
        },
        v.generation
    );
    out += &format!("  class       {}\n", opt(v.meta.class.as_ref()));
    if let Some(i) = &v.insight {
        out += &format!(
            "  forecast    {} shards, rate {} pps, forecast {} pps, upper {} pps, model {}, error {}\n",
            i.shards, decimal(i.rate), decimal(i.forecast), decimal(i.upper), i.model, decimal(i.error)
        );
    } else {
        out += "  forecast    none yet (the control loop has not seen this session)\n";
    }
    let keys: Vec<String> = d
        .state_keys
        .iter()
        .map(|(k, n)| format!("{k} ({n} B)"))
        .collect();
    out += &format!(
        "  state       {}\n",
        if keys.is_empty() {
            "-".into()
        } else {
            keys.join(", ")
        }
    );
    let history = &d.history;
    if !history.is_empty() {
        out += &format!(
            "history (last {} of {} samples)\n",
            history.len().min(10),
            history.len()
        );
        let recent = &history[history.len().saturating_sub(10)..];
        let rows: Vec<Vec<String>> = recent
            .iter()
            .map(|s| {
                vec![
                    s.at_ms.to_string(),
                    decimal(s.actual),
                    decimal(s.forecast),
                    decimal(s.upper),
                ]
            })
            .collect();
        out += &table(&["AT_MS", "ACTUAL", "FORECAST", "UPPER"], &rows);
    }
    if !d.events.is_empty() {
        out += "re-shards\n";
        let rows: Vec<Vec<String>> = d
            .events
            .iter()
            .map(|e| {
                vec![
                    e.at_ms.to_string(),
                    e.from.to_string(),
                    e.to.to_string(),
                    e.reason.clone(),
                ]
            })
            .collect();
        out += &table(&["AT_MS", "FROM", "TO", "REASON"], &rows);
    }
    out
}

#[cfg(test)]
mod tests;
