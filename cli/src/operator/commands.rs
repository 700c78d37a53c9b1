//! The table-and-JSON commands: one API call each (two for `sessions show`), printed as a
//! table for people or as the API's JSON with `--json`.

use reqwest::Method;
use serde_json::{json, Value};

use super::{BackendAction, CliError, Client, ClusterAction, Operator, SessionAction, StateAction};
use shardline::state::SessionRef;

/// Runs `command` and prints its output.
pub fn run(command: Operator) -> Result<(), CliError> {
    match command {
        Operator::Status { api } => show(&api, Client::new(&api)?.get("/v1/status")?, status),
        Operator::Backends { api, action } => backends(&api, action.unwrap_or(BackendAction::List)),
        Operator::Services { api } => show(&api, Client::new(&api)?.get("/v1/services")?, services),
        Operator::Sessions { api, action } => match action.unwrap_or(SessionAction::List) {
            SessionAction::List => show(&api, Client::new(&api)?.get("/v1/sessions")?, sessions),
            SessionAction::Show { session } => show(
                &api,
                Client::new(&api)?.get(&session_path(&session))?,
                session_detail,
            ),
        },
        Operator::Cluster { api, action } => {
            cluster(&api, action.unwrap_or(ClusterAction::Members))
        }
        Operator::Reshard {
            api,
            session,
            backends,
            default,
        } => {
            let client = Client::new(&api)?;
            let path = format!("{}/placement", session_path(&session));
            let answer = if default {
                client.send(Method::DELETE, &path, None)?
            } else {
                client.send(Method::PUT, &path, Some(json!({ "backends": backends })))?
            };
            show(&api, answer, written)
        }
        Operator::State { api, action } => state(&api, action),
        Operator::Top {
            api,
            once,
            interval,
        } => super::top::run(&Client::new(&api)?, once, interval),
        Operator::Plot { api, session, out } => {
            let detail = Client::new(&api)?.get(&session_path(&session))?;
            super::plot::draw(&session, &detail, &out)?;
            if api.json {
                println!("{}", json!({ "written": out }));
            } else {
                println!("wrote {}", out.display());
            }
            Ok(())
        }
    }
}

/// The API path of a session.
pub fn session_path(s: &SessionRef) -> String {
    format!("/v1/sessions/{}/{}", s.service, s.session)
}

fn show(api: &super::ApiArgs, value: Value, human: fn(&Value) -> String) -> Result<(), CliError> {
    if api.json {
        println!("{value}");
    } else {
        print!("{}", human(&value));
    }
    Ok(())
}

fn backends(api: &super::ApiArgs, action: BackendAction) -> Result<(), CliError> {
    let client = Client::new(api)?;
    let answer = match action {
        BackendAction::List => return show(api, client.get("/v1/backends")?, backend_table),
        BackendAction::Add {
            id,
            ipv4,
            ipv6,
            mac,
            weight,
        } => {
            let body =
                json!({ "id": id, "ipv4": ipv4, "ipv6": ipv6, "mac": mac, "weight": weight });
            let added = client.send(Method::POST, "/v1/backends", Some(body))?;
            return show(api, added, |b| backend_table(&json!([b])));
        }
        BackendAction::Drain { id, undo } => {
            let verb = if undo { "undrain" } else { "drain" };
            client.send(Method::POST, &format!("/v1/backends/{id}/{verb}"), None)?
        }
        BackendAction::Remove { id } => {
            client.send(Method::DELETE, &format!("/v1/backends/{id}"), None)?
        }
        BackendAction::Weight { id, weight } => client.send(
            Method::PUT,
            &format!("/v1/backends/{id}/weight"),
            Some(json!({ "weight": weight })),
        )?,
    };
    show(api, answer, written)
}

fn cluster(api: &super::ApiArgs, action: ClusterAction) -> Result<(), CliError> {
    let client = Client::new(api)?;
    match action {
        ClusterAction::Members => show(api, client.get("/v1/cluster")?, members),
        ClusterAction::Leader => {
            let c = client.get("/v1/cluster")?;
            let leader = c["leader"].as_u64();
            let addr = c["members"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["id"].as_u64() == leader)
                .and_then(|m| m["addr"].as_str())
                .unwrap_or("");
            let value = json!({ "leader": leader, "addr": addr, "term": c["term"] });
            show(api, value, |v| match v["leader"].as_u64() {
                Some(id) => match v["addr"].as_str().filter(|a| !a.is_empty()) {
                    Some(addr) => format!("node {id} at {addr} (term {})\n", v["term"]),
                    None => format!("node {id} (term {})\n", v["term"]),
                },
                None => "no leader known\n".into(),
            })
        }
        ClusterAction::Add { id, addr } => {
            let body = json!({ "id": id, "addr": addr });
            show(
                api,
                client.send(Method::POST, "/v1/cluster/members", Some(body))?,
                members,
            )
        }
        ClusterAction::Remove { id } => show(
            api,
            client.send(Method::DELETE, &format!("/v1/cluster/members/{id}"), None)?,
            members,
        ),
    }
}

fn state(api: &super::ApiArgs, action: StateAction) -> Result<(), CliError> {
    let client = Client::new(api)?;
    let key_path = |s: &SessionRef, key: &str| format!("{}/state/{key}", session_path(s));
    match action {
        StateAction::Get { session, key } => {
            show(api, client.get(&key_path(&session, &key))?, |v| {
                match v["value"].as_str() {
                    Some(text) => format!("{text}\n"),
                    None => format!("hex:{}\n", v["hex"].as_str().unwrap_or("")),
                }
            })
        }
        StateAction::Put {
            session,
            key,
            value,
            hex,
        } => {
            let body = if hex {
                json!({ "hex": value })
            } else {
                json!({ "value": value })
            };
            show(
                api,
                client.send(Method::PUT, &key_path(&session, &key), Some(body))?,
                written,
            )
        }
        StateAction::Delete { session, key } => show(
            api,
            client.send(Method::DELETE, &key_path(&session, &key), None)?,
            written,
        ),
    }
}

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

/// A JSON value as a table cell: strings bare, null as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.1}"),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

fn rows(v: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|item| {
            fields
                .iter()
                .map(|f| cell(&item.pointer(f).cloned().unwrap_or(Value::Null)))
                .collect()
        })
        .collect()
}

fn written(v: &Value) -> String {
    match v["placement"].as_u64() {
        Some(p) => format!(
            "ok: generation {}, placement generation {p}\n",
            v["generation"]
        ),
        None => format!("ok: generation {}\n", v["generation"]),
    }
}

fn status(v: &Value) -> String {
    let c = &v["cluster"];
    let mut out = format!(
        "node {} ({}, term {}), leader {}, applied {}\n",
        c["node"],
        cell(&c["role"]),
        c["term"],
        cell(&c["leader"]),
        c["applied"]
    );
    out += &format!(
        "generation {}, {} services, {} backends ({} healthy, {} draining), {} placed sessions, {} forecast\n",
        v["generation"], v["services"], v["backends"], v["healthy_backends"], v["draining_backends"],
        v["placed_sessions"], v["forecast_sessions"]
    );
    let d = &v["dataplane"];
    if d.is_object() {
        out += &format!(
            "dataplane: {} forwarded, {} passed, {} dropped\n",
            d["forwarded"], d["passed"], d["dropped"]
        );
    }
    out += &format!(
        "api: {}, version {}, up {} s\n",
        if v["writable"] == true {
            "writable"
        } else {
            "read-only (no token configured)"
        },
        cell(&v["version"]),
        v["uptime_secs"]
    );
    out
}

fn backend_table(v: &Value) -> String {
    let fields = [
        "/id",
        "/ipv4",
        "/ipv6",
        "/mac",
        "/weight",
        "/effective_weight",
        "/healthy",
        "/draining",
        "/packets",
        "/bytes",
    ];
    table(
        &[
            "ID",
            "IPV4",
            "IPV6",
            "MAC",
            "WEIGHT",
            "EFFECTIVE",
            "HEALTHY",
            "DRAINING",
            "PACKETS",
            "BYTES",
        ],
        &rows(v, &fields),
    )
}

fn services(v: &Value) -> String {
    let fields = [
        "/id",
        "/name",
        "/vip",
        "/port",
        "/protocol",
        "/mode",
        "/forward",
        "/placed_sessions",
        "/packets",
    ];
    table(
        &[
            "ID", "NAME", "VIP", "PORT", "PROTO", "MODE", "FORWARD", "PLACED", "PACKETS",
        ],
        &rows(v, &fields),
    )
}

fn sessions(v: &Value) -> String {
    let fields = [
        "/service",
        "/session",
        "/backends",
        "/generation",
        "/meta/class",
        "/insight/shards",
        "/insight/rate",
        "/insight/forecast",
        "/insight/upper",
        "/insight/model",
    ];
    table(
        &[
            "SERVICE", "SESSION", "BACKENDS", "GEN", "CLASS", "SHARDS", "RATE", "FORECAST",
            "UPPER", "MODEL",
        ],
        &rows(v, &fields),
    )
}

fn members(v: &Value) -> String {
    let leader = v["leader"].as_u64();
    let rows: Vec<Vec<String>> = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let role = if m["id"].as_u64() == leader {
                "leader"
            } else if m["voter"] == true {
                "voter"
            } else {
                "learner"
            };
            vec![cell(&m["id"]), cell(&m["addr"]), role.into()]
        })
        .collect();
    format!(
        "term {}, this node {} ({})\n",
        v["term"],
        v["node"],
        cell(&v["role"])
    ) + &table(&["ID", "ADDR", "ROLE"], &rows)
}

fn session_detail(v: &Value) -> String {
    let mut out = format!("session {}/{}\n", cell(&v["service"]), v["session"]);
    let backends = cell(&v["backends"]);
    out += &format!(
        "  shard set   {} (generation {})\n",
        if backends.is_empty() {
            "default table".into()
        } else {
            backends
        },
        v["generation"]
    );
    out += &format!("  class       {}\n", cell(&v["meta"]["class"]));
    let i = &v["insight"];
    if i.is_object() {
        out += &format!(
            "  forecast    {} shards, rate {} pps, forecast {} pps, upper {} pps, model {}, error {}\n",
            i["shards"], cell(&i["rate"]), cell(&i["forecast"]), cell(&i["upper"]), cell(&i["model"]), cell(&i["error"])
        );
    } else {
        out += "  forecast    none yet (the control loop has not seen this session)\n";
    }
    let keys: Vec<String> = v["state_keys"]
        .as_object()
        .into_iter()
        .flatten()
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
    let history = v["history"].as_array().cloned().unwrap_or_default();
    if !history.is_empty() {
        out += &format!(
            "history (last {} of {} samples)\n",
            history.len().min(10),
            history.len()
        );
        let recent = &history[history.len().saturating_sub(10)..];
        out += &table(
            &["AT_MS", "ACTUAL", "FORECAST", "UPPER"],
            &rows(
                &Value::Array(recent.to_vec()),
                &["/at_ms", "/actual", "/forecast", "/upper"],
            ),
        );
    }
    let events = v["events"].as_array().cloned().unwrap_or_default();
    if !events.is_empty() {
        out += "re-shards\n";
        out += &table(
            &["AT_MS", "FROM", "TO", "REASON"],
            &rows(
                &Value::Array(events),
                &["/at_ms", "/from", "/to", "/reason"],
            ),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_cells_read_well() {
        let t = table(
            &["ID", "NAME"],
            &[vec!["1".into(), "kv".into()], vec!["10".into(), "-".into()]],
        );
        assert_eq!(t, "ID  NAME\n1   kv\n10  -\n");
        assert_eq!(cell(&json!(null)), "-");
        assert_eq!(cell(&json!([1, 2])), "1,2");
        assert_eq!(cell(&json!(1.25)), "1.2");
        assert_eq!(cell(&json!(3)), "3");
    }

    #[test]
    fn a_session_without_insight_says_so() {
        let v = json!({"service": "kv", "session": 42, "backends": [1, 2], "generation": 1,
                       "meta": {"class": null}, "insight": null, "history": [], "events": [], "state_keys": {"cart": 7}});
        let text = session_detail(&v);
        assert!(text.contains("shard set   1,2 (generation 1)"), "{text}");
        assert!(text.contains("none yet"), "{text}");
        assert!(text.contains("cart (7 B)"), "{text}");
    }
}
