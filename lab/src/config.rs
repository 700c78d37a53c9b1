//! The daemon's configuration in a lab, built as a [`Config`] value (the lab writes it with
//! `toml::to_string`, so what the daemon reads is what the lab replays against): six services
//! on the lab's VIPs, each on its own pool (the QUIC ones on two backends, the rest on every
//! backend), one backend per backend namespace, the odd header sessions placed on two
//! backends, the API token, and with the predictive loop its `[control]` section and each
//! backend's agent and capacity.

use std::{net::IpAddr, path::Path};

use shardline::config::{
    ApiConfig, BackendConfig, Config, Encap, ForwardMode, IcmpConfig, NextHop, PoolMember,
    Protocol, ServiceConfig, SessionConfig, SessionId, SessionMode, XdpAttachMode,
};
use shardline_common::consts::DEFAULT_FLOW_IDLE_SECS;

use crate::{
    predict::{self, PredictOptions},
    topology::{backend4, backend6, backend_mac, LB4, LB6, VIP4, VIP6},
    traffic::{Session, SessionKind},
    LabOptions, HEADER_PORT, QUIC_PORT, TCP_FLOW_PORT, UDP_FLOW_PORT,
};

/// Every lab's services: name, VIP, port, protocol and mode. The header and QUIC services
/// exist on both address families, so both encapsulations are exercised.
const SERVICES: [(&str, IpAddr, u16, Protocol, SessionMode); 6] = [
    (
        "kv",
        IpAddr::V4(VIP4),
        HEADER_PORT,
        Protocol::Udp,
        SessionMode::Header,
    ),
    (
        "kv6",
        IpAddr::V6(VIP6),
        HEADER_PORT,
        Protocol::Udp,
        SessionMode::Header,
    ),
    (
        "dns",
        IpAddr::V4(VIP4),
        UDP_FLOW_PORT,
        Protocol::Udp,
        SessionMode::Flow,
    ),
    (
        "web",
        IpAddr::V4(VIP4),
        TCP_FLOW_PORT,
        Protocol::Tcp,
        SessionMode::Flow,
    ),
    (
        "quic",
        IpAddr::V4(VIP4),
        QUIC_PORT,
        Protocol::Udp,
        SessionMode::Quic,
    ),
    (
        "quic6",
        IpAddr::V6(VIP6),
        QUIC_PORT,
        Protocol::Udp,
        SessionMode::Quic,
    ),
];

/// The daemon configuration of a lab with `backends` backends, pinning under `pin_dir`, with
/// no API token and no control loop. Odd header sessions are placed on two backends each; the
/// rest use the default table.
pub fn lab_config(backends: u32, sessions: &[Session], pin_dir: &Path) -> Config {
    let services = SERVICES
        .iter()
        .map(|&(name, vip, port, protocol, mode)| ServiceConfig {
            name: name.into(),
            vip,
            port,
            protocol,
            mode,
            forward: ForwardMode::Encap,
            server_id_len: None,
            cid_generation: None,
            backends: Some(pool(name, backends)),
            ring_size: None,
            probe: None,
            probe_path: Default::default(),
            probe_http_path: None,
            probe_http_status: None,
        })
        .collect();
    let backend = |id| BackendConfig {
        id,
        ipv4: Some(backend4(id)),
        ipv6: Some(backend6(id)),
        mac: backend_mac(id),
        weight: 1,
        agent: None,
        capacity: None,
        nexthop: Default::default(),
    };
    Config {
        interface: "eth0".into(),
        egress_interfaces: Vec::new(),
        xdp_mode: XdpAttachMode::Auto,
        pin_dir: pin_dir.to_owned(),
        flow_idle_secs: DEFAULT_FLOW_IDLE_SECS,
        handoff_window_secs: shardline::config::DEFAULT_HANDOFF_WINDOW_SECS,
        encap: Encap {
            source_v4: Some(LB4),
            source_v6: Some(LB6),
            source_v4_prefix: None,
        },
        icmp: IcmpConfig::default(),
        services,
        backends: (1..=backends).map(backend).collect(),
        sessions: sessions
            .iter()
            .filter_map(|s| placed(s, backends))
            .collect(),
        control: None,
        cluster: None,
        api: ApiConfig::default(),
    }
}

/// Services on the two QUIC backends only (the rest are served by every backend the lab
/// starts with, and by the backends the autoscale hook adds, which register for them).
pub const QUIC_POOL_SERVICES: [&str; 2] = ["quic", "quic6"];

/// The pool of service `name` in a lab of `backends` backends: the QUIC services on backends
/// 1 and 2, every other service on every backend.
fn pool(name: &str, backends: u32) -> Vec<PoolMember> {
    let last = if QUIC_POOL_SERVICES.contains(&name) {
        backends.min(2)
    } else {
        backends
    };
    (1..=last.max(1)).map(PoolMember::Id).collect()
}

/// Where `session` is placed: odd header sessions on two neighbouring backends (when there
/// are two), so static placements are routed alongside the default table.
fn placed(session: &Session, backends: u32) -> Option<SessionConfig> {
    let SessionKind::Header { id } = session.kind else {
        return None;
    };
    if id % 2 == 0 || backends < 2 {
        return None;
    }
    let service = if session.vip.is_ipv6() { "kv6" } else { "kv" };
    Some(SessionConfig {
        service: service.into(),
        session: SessionId::Id(id),
        backends: vec![(id as u32 % backends) + 1, ((id as u32 + 1) % backends) + 1],
    })
}

/// The configuration a lab's daemon starts with: [`lab_config`] with the API token in
/// `api_token` and, with `predict`, the `[control]` section (history in `work_dir`, the hook
/// running this lab's `shardline-lab`) and every backend's agent and capacity.
pub fn daemon_config(
    opts: &LabOptions,
    sessions: &[Session],
    work_dir: &Path,
    pin_dir: &Path,
    api_token: &Path,
    predict: Option<&PredictOptions>,
) -> Config {
    let mut config = lab_config(opts.backends, sessions, pin_dir);
    config.api.token_file = Some(api_token.to_owned());
    if let Some(p) = predict {
        for backend in &mut config.backends {
            predict::add_agent(p, backend);
        }
        config.control = Some(predict::control_config(
            p,
            work_dir,
            &opts.bins.lab,
            &opts.tag,
            opts.sessions,
        ));
    }
    config
}

/// Turns `config` into the two-arm lab's ([`crate::topology::two_arm`]): every backend at its
/// backend-segment address, `nexthop = "fib"` and no MAC; the backend arm an egress interface.
pub fn two_arm(config: &mut Config) {
    use crate::topology::two_arm::{arm_backend4, arm_backend6, ARM_IFACE};
    config.egress_interfaces = vec![ARM_IFACE.to_owned()];
    for b in &mut config.backends {
        b.ipv4 = Some(arm_backend4(b.id));
        b.ipv6 = Some(arm_backend6(b.id));
        b.mac = String::new();
        b.nexthop = NextHop::Fib;
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use shardline::config::control::{Controller, OnCorrupt};

    use super::*;
    use crate::{traffic, Binaries};

    fn options() -> LabOptions {
        LabOptions {
            tag: "t1".into(),
            backends: 3,
            sessions: 8,
            bins: Binaries {
                shardline: "/opt/bin/shardline".into(),
                lab: "/opt/bin/shardline-lab".into(),
            },
        }
    }

    #[test]
    fn services_have_pools_and_the_hook_backend_registers_for_all_but_quic() {
        let config = lab_config(4, &[], Path::new("/sys/fs/bpf/x"));
        for s in &config.services {
            let want: Vec<u32> = if QUIC_POOL_SERVICES.contains(&s.name.as_str()) {
                vec![1, 2]
            } else {
                vec![1, 2, 3, 4]
            };
            assert_eq!(s.pool_ids(), Some(want), "{}", s.name);
        }
        let others: Vec<&str> = SERVICES
            .iter()
            .map(|s| s.0)
            .filter(|n| !QUIC_POOL_SERVICES.contains(n))
            .collect();
        assert_eq!(others, predict::HOOK_BACKEND_SERVICES);
    }

    fn build(predict: Option<&PredictOptions>) -> Config {
        let opts = options();
        let config = daemon_config(
            &opts,
            &traffic::sessions(opts.sessions),
            Path::new("/tmp/lab-t1"),
            Path::new("/sys/fs/bpf/lab-t1"),
            Path::new("/tmp/lab-t1/api-token"),
            predict,
        );
        config.validate().unwrap();
        let text = toml::to_string(&config).unwrap();
        assert_eq!(
            Config::parse(&text, "lab config").unwrap(),
            config,
            "{text}"
        );
        config
    }

    #[test]
    fn without_the_loop_the_daemon_gets_services_backends_sessions_and_the_token() {
        let c = build(None);
        assert_eq!(c.interface, "eth0");
        assert_eq!(c.pin_dir, Path::new("/sys/fs/bpf/lab-t1"));
        assert_eq!(
            (c.encap.source_v4, c.encap.source_v6),
            (Some(LB4), Some(LB6))
        );
        let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["kv", "kv6", "dns", "web", "quic", "quic6"]);
        let web = &c.services[3];
        assert_eq!(
            (web.vip, web.port, web.protocol, web.mode),
            (
                IpAddr::V4(VIP4),
                TCP_FLOW_PORT,
                Protocol::Tcp,
                SessionMode::Flow
            )
        );
        assert!(c.services[5].vip.is_ipv6() && c.services[5].cid_layout().is_some());
        let ids: Vec<u32> = c.backends.iter().map(|b| b.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        let b2 = &c.backends[1];
        assert_eq!((b2.ipv4, b2.ipv6), (Some(backend4(2)), Some(backend6(2))));
        assert_eq!((b2.mac.as_str(), b2.weight), (backend_mac(2).as_str(), 1));
        assert!(c
            .backends
            .iter()
            .all(|b| b.agent.is_none() && b.capacity.is_none()));
        assert!(!c.sessions.is_empty());
        for s in &c.sessions {
            let SessionId::Id(id) = s.session else {
                panic!("a header session is a number: {s:?}");
            };
            assert_eq!(id % 2, 1, "only odd header sessions are placed");
            let expected = [(id as u32 % 3) + 1, ((id as u32 + 1) % 3) + 1];
            assert_eq!(s.backends, expected);
        }
        let hdr1 = c.sessions.iter().find(|s| s.session == SessionId::Id(1));
        assert_eq!(hdr1.map(|s| s.backends.as_slice()), Some(&[2, 3][..]));
        let token = c.api.token_file.as_deref();
        assert_eq!(token, Some(Path::new("/tmp/lab-t1/api-token")));
        assert_eq!(c.api.listen, ApiConfig::default().listen);
        assert!(c.control.is_none() && c.cluster.is_none());
    }

    #[test]
    fn with_the_loop_backends_have_agents_and_the_daemon_a_control_section() {
        let p = PredictOptions {
            hook: true,
            on_corrupt: OnCorrupt::Refuse,
            ..PredictOptions::default()
        };
        let c = build(Some(&p));
        let b3 = &c.backends[2];
        assert_eq!(
            b3.agent,
            Some(format!("{}:{}", backend4(3), predict::AGENT_PORT))
        );
        assert_eq!(b3.capacity, Some(400.0));
        let control = c.control.as_ref().expect("a [control] section");
        assert_eq!((control.tick_ms, control.health_interval_ms), (500, 500));
        assert_eq!((control.horizon, control.per_shard_capacity), (6, 250.0));
        assert_eq!((control.headroom, control.min_dwell_secs), (0.25, 2.0));
        assert_eq!(control.scale_in_delay_secs, 30.0);
        assert_eq!(control.listen, Some("10.77.0.2:7070".parse().unwrap()));
        assert_eq!(
            control.agent_token_dir,
            Some(PathBuf::from("/tmp/lab-t1/agent-tokens")),
            "the lab's agents use real tokens"
        );
        assert!(!control.insecure_agents);
        assert_eq!(
            control.history_path,
            Some(PathBuf::from("/tmp/lab-t1/history.redb"))
        );
        assert_eq!(control.history_on_corrupt, OnCorrupt::Refuse);
        let hook = control.hook.as_ref().expect("a [control.hook] section");
        let command = hook.command.as_deref().unwrap_or_default();
        assert_eq!(
            command,
            [
                "/opt/bin/shardline-lab",
                "add-backend",
                "--tag",
                "t1",
                "--work-dir",
                "/tmp/lab-t1",
                "--capacity",
                "400",
                "--aliases",
                "8"
            ]
        );
        assert_eq!((hook.lead_secs, hook.cooldown_secs), (15.0, 20.0));
        assert!(hook.webhook.is_none());
        assert_eq!(control.controller, Controller::Predictive);
        let without_hook = build(Some(&PredictOptions::default()));
        assert!(without_hook.control.unwrap().hook.is_none());
        let reactive = build(Some(&PredictOptions {
            controller: Controller::Reactive,
            ..PredictOptions::default()
        }));
        let control = reactive.control.expect("a [control] section");
        assert_eq!(control.controller, Controller::Reactive);
    }
}
