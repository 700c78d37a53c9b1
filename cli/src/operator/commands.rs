//! The table-and-JSON commands: one API call each, printed as a table for people (see
//! [`super::tables`]) or, with `--json`, as the API's JSON as the daemon sent it. Answers
//! parse into the API's own views (`shardline::api::views`), the types its handlers
//! serialise; request bodies are those types too.

use std::path::Path;

use reqwest::Method;
use serde::Serialize;
use shardline::{
    api::views::{
        BackendConfig, BackendView, ClusterStatus, NewMember, Placement, PoolWeight, StateValue,
        Weight,
    },
    state::SessionRef,
};

use super::{
    client::{Answer, NO_BODY},
    tables::{
        backend_table, drained, members, owners, services, session_detail, sessions, status,
        written,
    },
    ApiArgs, BackendAction, CliError, Client, ClusterAction, Operator, SessionAction, StateAction,
};

/// Runs `command` and prints its output.
pub fn run(command: Operator) -> Result<(), CliError> {
    match command {
        Operator::Status { api } => show(&api, Client::new(&api)?.get("/v1/status")?, status),
        Operator::Backends { api, action } => backends(&api, action.unwrap_or(BackendAction::List)),
        Operator::Services { api } => show(
            &api,
            Client::new(&api)?.get("/v1/services")?,
            |v: &Vec<_>| services(v),
        ),
        Operator::Sessions { api, action } => match action.unwrap_or(SessionAction::List {
            service: None,
            class: None,
            label: Vec::new(),
        }) {
            SessionAction::List {
                service,
                class,
                label,
            } => show(
                &api,
                Client::new(&api)?.get(&sessions_query(service, class, &label))?,
                |v: &Vec<_>| sessions(v),
            ),
            SessionAction::Show { session } => show(
                &api,
                Client::new(&api)?.get(&session_path(&session))?,
                session_detail,
            ),
            SessionAction::Owners { session, key } => show(
                &api,
                Client::new(&api)?.get(&format!("{}/owners?key={key}", session_path(&session)))?,
                owners,
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
                client.send(Method::DELETE, &path, NO_BODY)?
            } else {
                client.send(Method::PUT, &path, Some(&Placement { backends }))?
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
            let detail = Client::new(&api)?.get(&session_path(&session))?.view;
            super::plot::draw(&session, &detail, &out)?;
            if api.json {
                /// What `plot --json` prints.
                #[derive(Serialize)]
                struct Written<'a> {
                    written: &'a Path,
                }
                print_json(&Written { written: &out });
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

/// Prints `answer` as the daemon sent it with `--json`, else as `human` renders it.
fn show<T>(api: &ApiArgs, answer: Answer<T>, human: impl Fn(&T) -> String) -> Result<(), CliError> {
    if api.json {
        println!("{}", answer.json.trim_end());
    } else {
        print!("{}", human(&answer.view));
    }
    Ok(())
}

/// Prints output the CLI makes itself (not an API answer) as one line of JSON.
fn print_json<T: Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string(value).expect("the CLI's own output serialises")
    );
}

fn backends(api: &ApiArgs, action: BackendAction) -> Result<(), CliError> {
    let client = Client::new(api)?;
    let answer = match action {
        BackendAction::List => {
            return show(api, client.get("/v1/backends")?, |v: &Vec<_>| {
                backend_table(v)
            })
        }
        BackendAction::Add {
            id,
            ipv4,
            ipv6,
            mac,
            weight,
            services,
        } => {
            let body = BackendConfig {
                id,
                ipv4,
                ipv6,
                mac,
                weight,
                agent: None,
                capacity: None,
                nexthop: Default::default(),
            };
            let added = client.send(Method::POST, "/v1/backends", Some(&body))?;
            for service in &services {
                client.send::<shardline::api::views::Response, _>(
                    Method::PUT,
                    &pool_path(service, id),
                    Some(&PoolWeight::default()),
                )?;
            }
            return show(api, added, |b: &BackendView| {
                backend_table(std::slice::from_ref(b))
            });
        }
        BackendAction::Drain {
            id,
            undo,
            service: Some(service),
        } => client.send(
            Method::PUT,
            &pool_path(&service, id),
            Some(&PoolWeight {
                weight: (!undo).then_some(0),
            }),
        )?,
        BackendAction::Drain {
            id,
            undo: true,
            service: None,
        } => client.send(Method::POST, &format!("/v1/backends/{id}/undrain"), NO_BODY)?,
        BackendAction::Drain {
            id,
            undo: false,
            service: None,
        } => {
            let answer = client.send(Method::POST, &format!("/v1/backends/{id}/drain"), NO_BODY)?;
            return show(api, answer, drained);
        }
        BackendAction::Remove {
            id,
            service: Some(service),
        } => client.send(Method::DELETE, &pool_path(&service, id), NO_BODY)?,
        BackendAction::Remove { id, service: None } => {
            client.send(Method::DELETE, &format!("/v1/backends/{id}"), NO_BODY)?
        }
        BackendAction::Weight {
            id,
            weight,
            service: Some(service),
        } => client.send(
            Method::PUT,
            &pool_path(&service, id),
            Some(&PoolWeight {
                weight: Some(weight),
            }),
        )?,
        BackendAction::Weight {
            id,
            weight,
            service: None,
        } => client.send(
            Method::PUT,
            &format!("/v1/backends/{id}/weight"),
            Some(&Weight { weight }),
        )?,
    };
    show(api, answer, written)
}

/// The API path of backend `id` in service `service`'s pool.
fn pool_path(service: &str, id: u32) -> String {
    format!("/v1/services/{service}/backends/{id}")
}

/// What `cluster leader` prints with `--json` (fields in the order it always printed them).
#[derive(Debug, PartialEq, Serialize)]
struct LeaderView {
    /// The leader's address (empty if unknown).
    addr: String,
    /// The leader's node id, if one is known.
    leader: Option<u64>,
    /// The term.
    term: u64,
}

impl LeaderView {
    fn of(c: &ClusterStatus) -> Self {
        let addr = c
            .members
            .iter()
            .find(|m| Some(m.id) == c.leader)
            .map(|m| m.addr.clone())
            .unwrap_or_default();
        Self {
            addr,
            leader: c.leader,
            term: c.term,
        }
    }

    fn human(&self) -> String {
        match (self.leader, self.addr.as_str()) {
            (None, _) => "no leader known\n".into(),
            (Some(id), "") => format!("node {id} (term {})\n", self.term),
            (Some(id), addr) => format!("node {id} at {addr} (term {})\n", self.term),
        }
    }
}

fn cluster(api: &ApiArgs, action: ClusterAction) -> Result<(), CliError> {
    let client = Client::new(api)?;
    match action {
        ClusterAction::Members => show(api, client.get("/v1/cluster")?, members),
        ClusterAction::Leader => {
            let leader = LeaderView::of(&client.get::<ClusterStatus>("/v1/cluster")?.view);
            if api.json {
                print_json(&leader);
            } else {
                print!("{}", leader.human());
            }
            Ok(())
        }
        ClusterAction::Add { id, addr, learner } => show(
            api,
            client.send(
                Method::POST,
                "/v1/cluster/members",
                Some(&NewMember {
                    id,
                    addr,
                    voter: !learner,
                }),
            )?,
            members,
        ),
        ClusterAction::Remove { id } => show(
            api,
            client.send(
                Method::DELETE,
                &format!("/v1/cluster/members/{id}"),
                NO_BODY,
            )?,
            members,
        ),
    }
}

fn state(api: &ApiArgs, action: StateAction) -> Result<(), CliError> {
    let client = Client::new(api)?;
    let key_path = |s: &SessionRef, key: &str| format!("{}/state/{key}", session_path(s));
    match action {
        StateAction::Get { session, key } => show(
            api,
            client.get(&key_path(&session, &key))?,
            |v: &StateValue| match &v.value {
                Some(text) => format!("{text}\n"),
                None => format!("hex:{}\n", v.hex.as_deref().unwrap_or("")),
            },
        ),
        StateAction::Put {
            session,
            key,
            value,
            hex,
        } => {
            let (value, hex) = if hex {
                (None, Some(value))
            } else {
                (Some(value), None)
            };
            let body = StateValue {
                key: None,
                value,
                hex,
            };
            show(
                api,
                client.send(Method::PUT, &key_path(&session, &key), Some(&body))?,
                written,
            )
        }
        StateAction::Delete { session, key } => show(
            api,
            client.send(Method::DELETE, &key_path(&session, &key), NO_BODY)?,
            written,
        ),
    }
}

/// `GET /v1/sessions` with the filters given, their values percent-encoded.
fn sessions_query(service: Option<String>, class: Option<String>, labels: &[String]) -> String {
    let mut url = reqwest::Url::parse("http://api/v1/sessions").expect("a valid base");
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = &service {
            q.append_pair("service", s);
        }
        if let Some(c) = &class {
            q.append_pair("class", c);
        }
        if !labels.is_empty() {
            q.append_pair("label", &labels.join(","));
        }
    }
    match url.query() {
        Some(query) if !query.is_empty() => format!("/v1/sessions?{query}"),
        _ => "/v1/sessions".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline::api::views::Member;

    #[test]
    fn the_leader_is_found_among_the_members() {
        let mut c = ClusterStatus {
            node: 1,
            role: "follower".into(),
            term: 4,
            leader: Some(2),
            applied: 9,
            members: vec![
                Member {
                    id: 1,
                    addr: "a:1".into(),
                    voter: true,
                },
                Member {
                    id: 2,
                    addr: "b:2".into(),
                    voter: true,
                },
            ],
        };
        let leader = LeaderView::of(&c);
        assert_eq!(leader.human(), "node 2 at b:2 (term 4)\n");
        assert_eq!(
            serde_json::to_string(&leader).unwrap(),
            r#"{"addr":"b:2","leader":2,"term":4}"#
        );
        assert!(members(&c).contains("2   b:2   leader"), "{}", members(&c));
        c.leader = None;
        assert_eq!(LeaderView::of(&c).human(), "no leader known\n");
    }

    #[test]
    fn session_filters_become_an_encoded_query() {
        assert_eq!(sessions_query(None, None, &[]), "/v1/sessions");
        assert_eq!(
            sessions_query(
                Some("kv".into()),
                Some("bulk load".into()),
                &["team=a".into(), "tier=gold&x".into()]
            ),
            "/v1/sessions?service=kv&class=bulk+load&label=team%3Da%2Ctier%3Dgold%26x"
        );
        assert!(super::super::parse_label("team=a").is_ok());
        assert!(super::super::parse_label("team").is_err());
        assert!(super::super::parse_label("=a").is_err());
        assert!(super::super::parse_label("a=1,b=2").is_err());
    }
}
