//! Unit tests of `health`.

use prometheus_client::{encoding::text::encode, registry::Registry};

use super::*;

#[test]
fn a_dead_backend_is_down_within_one_interval_and_transitions_are_counted() {
    let settings = Settings {
        interval: Duration::from_millis(900),
        thresholds: Thresholds { fall: 3, rise: 2 },
    };
    assert_eq!(settings.period(), Duration::from_millis(300));
    let (board, telemetry) = (HealthBoard::default(), Telemetry::default());
    let t = settings.thresholds;
    let mut down_at = None;
    for probe in 1..=4u64 {
        let (tr, healthy) = board.observe(2, true, Err("refused".into()), probe * 300, t);
        if let Some(tr) = tr {
            record(&telemetry, 2, tr, t, Some("refused"));
            down_at = Some(probe * 300);
        }
        assert_eq!(healthy, probe < 3, "probe {probe}");
    }
    assert_eq!(
        down_at,
        Some(900),
        "down after three failures, one interval"
    );
    for probe in 5..=6u64 {
        if let (Some(tr), _) = board.observe(2, false, Ok(()), probe * 300, t) {
            record(&telemetry, 2, tr, t, None);
        }
    }
    let probe = board.get(2).expect("probed");
    assert!(probe.healthy && probe.transitions == 2 && probe.since_ms == 1800);
    let mut registry = Registry::default();
    telemetry.register(&mut registry);
    let mut text = String::new();
    encode(&mut text, &registry).unwrap();
    for to in ["down", "up"] {
        let series =
            format!("shardline_backend_health_transitions_total{{backend=\"2\",to=\"{to}\"}} 1");
        assert!(text.contains(&series), "{series} missing:\n{text}");
    }
    board.retain(|id| id != 2);
    assert_eq!(board.get(2), None, "a removed backend is forgotten");
}

/// A cluster member `node` of `members` over one shared in-memory state.
struct Node {
    inner: Arc<crate::state::LocalControl>,
    node: u64,
    members: Vec<u64>,
    /// Every command it wrote.
    written: Written,
}

#[async_trait::async_trait]
impl Control for Node {
    async fn write(
        &self,
        command: Command,
    ) -> Result<crate::state::Response, crate::state::ControlError> {
        self.written.lock().unwrap().push(command.clone());
        self.inner.write(command).await
    }
    async fn read(&self) -> Result<Arc<crate::state::ControlState>, crate::state::ControlError> {
        self.inner.read().await
    }
    fn local(&self) -> Arc<crate::state::ControlState> {
        self.inner.local()
    }
    fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<crate::state::ControlState>> {
        self.inner.subscribe()
    }
    async fn status(&self) -> ClusterStatus {
        let mut status = self.inner.status().await;
        status.node = self.node;
        status.role = if self.node == 1 { "leader" } else { "follower" }.into();
        status.members = self
            .members
            .iter()
            .map(|&id| crate::state::Member {
                id,
                addr: String::new(),
                voter: true,
            })
            .collect();
        status
    }
    async fn add_member(
        &self,
        id: u64,
        addr: String,
        voter: bool,
    ) -> Result<(), crate::state::ControlError> {
        self.inner.add_member(id, addr, voter).await
    }
    async fn remove_member(&self, id: u64) -> Result<(), crate::state::ControlError> {
        self.inner.remove_member(id).await
    }
}

/// Backend 1 once `done` holds of it, within 5 s.
async fn until(
    control: &crate::state::LocalControl,
    what: &str,
    done: impl Fn(&BackendEntry) -> bool,
) -> BackendEntry {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let b = control.local().backends[&1].clone();
        if done(&b) {
            return b;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {b:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One backend whose agent is at `agent`, and nodes 1 and 3 of 3 having voted `up`.
async fn voted_fleet(agent: &str, up: bool) -> Arc<crate::state::LocalControl> {
    let config = crate::fixtures::kv_config(&[1], Some(agent));
    let state = crate::state::ControlState::from_config(&config);
    let local = Arc::new(crate::state::LocalControl::new(state));
    for node in [1, 3] {
        local
            .write(Command::HealthVote {
                node,
                id: 1,
                healthy: up,
                members: vec![1, 2, 3],
            })
            .await
            .unwrap();
    }
    local
}

type Written = Arc<std::sync::Mutex<Vec<Command>>>;

/// Runs the checker as node `node` of 3 over `local`, every 20 ms (fall 3, rise 2); the
/// commands it writes are logged in the second half.
fn checker(
    local: &Arc<crate::state::LocalControl>,
    node: u64,
) -> (tokio::task::JoinHandle<()>, Written) {
    let written = Written::default();
    let control: Arc<dyn Control> = Arc::new(Node {
        inner: local.clone(),
        node,
        members: vec![1, 2, 3],
        written: written.clone(),
    });
    let (tx, _rx) = crossbeam_channel::bounded(1);
    let hub = AgentsHub::new(control.clone(), tx, crate::guard::AgentAuth::Insecure);
    let settings = Settings {
        interval: Duration::from_millis(60),
        thresholds: Thresholds { fall: 3, rise: 2 },
    };
    let task = tokio::spawn(run(
        Shared {
            control,
            hub,
            board: Arc::new(HealthBoard::default()),
            telemetry: Arc::new(Telemetry::default()),
        },
        settings,
    ));
    (task, written)
}

#[tokio::test]
async fn a_backend_goes_down_only_when_most_probing_nodes_vote_it_down() {
    // Backend 1's agent address refuses connections: every node's probe fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let agent = dead.local_addr().unwrap().to_string();
    drop(dead);
    // Nodes 1 and 3 have voted it up; node 3's probes will fail later.
    let local = voted_fleet(&agent, true).await;
    let (two, _) = checker(&local, 2);
    let b = until(&local, "node 2 votes it down", |b| {
        b.votes.get(&2) == Some(&false)
    })
    .await;
    assert!(b.healthy, "1 of 3 nodes down is no majority: {b:?}");
    // Node 2 probes on: nothing changes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(local.local().backends[&1].healthy);
    let (three, _) = checker(&local, 3);
    let b = until(&local, "2 of 3 take it down", |b| !b.healthy).await;
    assert_eq!(b.votes, [(1, true), (2, false), (3, false)].into());
    two.abort();
    three.abort();
}

#[tokio::test]
async fn a_new_node_votes_what_its_probes_settle_on_not_the_fleet_s_verdict() {
    // An agent that answers: node 2's probes pass, while nodes 1 and 3 have it down.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent = listener.local_addr().unwrap().to_string();
    let app = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let local = voted_fleet(&agent, false).await;
    assert!(!local.local().backends[&1].healthy);
    let (two, written) = checker(&local, 2);
    let b = until(&local, "node 2 votes", |b| b.votes.contains_key(&2)).await;
    assert_eq!(b.votes.get(&2), Some(&true), "node 2's first vote: {b:?}");
    let written = written.lock().unwrap().clone();
    assert!(
        written
            .iter()
            .all(|c| matches!(c, Command::HealthVote { healthy: true, .. })),
        "node 2 wrote {written:?}"
    );
    assert!(!b.healthy, "1 of 3 up: still down");
    two.abort();
}

#[tokio::test]
async fn followers_vote_on_a_pool_member_s_probe_and_most_of_them_take_it_out() {
    // The service's port answers nothing: every node's probe of it fails.
    let mute = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = mute.local_addr().unwrap().port();
    let text = format!(
        "interface = \"eth0\"\n[encap]\nsource_v4 = \"10.0.0.2\"\n\
         [[services]]\nname = \"kv\"\nvip = \"10.0.0.1\"\nport = {port}\n\
         protocol = \"udp\"\nmode = \"header\"\nprobe = \"udp\"\n\
         probe_path = \"direct\"\nbackends = [1]\n\
         [[backends]]\nid = 1\nipv4 = \"127.0.0.1\"\nmac = \"02:00:00:00:00:01\"\n"
    );
    let config = crate::config::Config::parse(&text, "test").expect("valid");
    let state = crate::state::ControlState::from_config(&config);
    let local = Arc::new(crate::state::LocalControl::new(state));
    for node in [1, 3] {
        local
            .write(Command::ServiceHealthVote {
                node,
                service: "kv".into(),
                id: 1,
                healthy: true,
                members: vec![1, 2, 3],
            })
            .await
            .unwrap();
    }
    let kv_vote = |b: &BackendEntry, node| b.service_votes.get("kv")?.get(&node).copied();
    let (two, written) = checker(&local, 2);
    let b = until(&local, "follower 2 votes it failing", |b| {
        kv_vote(b, 2) == Some(false)
    })
    .await;
    assert!(b.serves("kv"), "1 of 3 is no majority: {b:?}");
    let (three, _) = checker(&local, 3);
    let b = until(&local, "2 of 3 take it out", |b| !b.serves("kv")).await;
    assert!(b.usable(), "out of kv's pool only: {b:?}");
    assert!(
        written
            .lock()
            .unwrap()
            .iter()
            .all(|c| matches!(c, Command::ServiceHealthVote { node: 2, .. })),
        "a follower votes, it never sets"
    );
    two.abort();
    three.abort();
}

#[test]
fn an_ipv4_vips_data_path_probe_goes_in_ipv6_to_a_backend_with_only_ipv6() {
    let text = r#"
        interface = "eth0"
        [encap]
        source_v4 = "10.0.0.2"
        source_v6 = "fd00::2"
        [[services]]
        name = "kv"
        vip = "10.0.0.1"
        port = 7000
        protocol = "udp"
        mode = "header"
        probe = "udp"
        [[backends]]
        id = 1
        ipv6 = "fd01::1"
        mac = "02:00:00:00:00:01"
    "#;
    let config = crate::config::Config::parse(text, "test").expect("valid");
    let state = crate::state::ControlState::from_config(&config);
    let one = plan(&state.services, 1, &state.backends[&1]);
    // As the balancer forwards the VIP's packets: IPv4-in-IPv6 to the IPv6 address.
    let want = Target {
        kind: ServiceProbe::Udp,
        addr: "[fd01::1]:7000".parse().unwrap(),
        via_vip: Some("10.0.0.1:7000".parse().unwrap()),
        http: None,
        mac: [2, 0, 0, 0, 0, 1],
    };
    assert_eq!(one.shared, vec![want]);
}

#[test]
fn a_pooled_service_is_probed_on_its_members_only() {
    let text = r#"
        interface = "eth0"
        [encap]
        source_v4 = "10.0.0.2"
        source_v6 = "fd00::2"

        [[services]]
        name = "kv"
        vip = "10.0.0.1"
        port = 7000
        protocol = "udp"
        mode = "header"
        probe = "udp"
        backends = [1]

        [[services]]
        name = "web"
        vip = "10.0.0.1"
        port = 8080
        protocol = "tcp"
        mode = "flow"
        probe = "tcp"
        probe_path = "direct"

        [[services]]
        name = "kv6"
        vip = "fd00::1"
        port = 7001
        protocol = "udp"
        mode = "header"
        probe = "udp"

        [[backends]]
        id = 1
        ipv4 = "10.1.0.1"
        ipv6 = "fd01::1"
        mac = "02:00:00:00:00:01"

        [[backends]]
        id = 2
        ipv4 = "10.1.0.2"
        mac = "02:00:00:00:00:02"
    "#;
    let config = crate::config::Config::parse(text, "test").expect("valid");
    let state = crate::state::ControlState::from_config(&config);
    let addr = |ip: &str, port| SocketAddr::new(ip.parse().unwrap(), port);
    // Each backend's MAC ends in its id, as its addresses do.
    let direct = |kind, ip: &str, port| Target {
        kind,
        addr: addr(ip, port),
        via_vip: None,
        http: None,
        mac: [2, 0, 0, 0, 0, if ip.ends_with('1') { 1 } else { 2 }],
    };
    let one = plan(&state.services, 1, &state.backends[&1]);
    // An IPv6 VIP's probe is encapsulated to the backend's IPv6 address.
    let on_data_path6 = Target {
        via_vip: Some("[fd00::1]:7001".parse().unwrap()),
        ..direct(ServiceProbe::Udp, "fd01::1", 7001)
    };
    assert_eq!(
        one.shared,
        vec![direct(ServiceProbe::Tcp, "10.1.0.1", 8080), on_data_path6]
    );
    let on_data_path = Target {
        via_vip: Some("10.0.0.1:7000".parse().unwrap()),
        ..direct(ServiceProbe::Udp, "10.1.0.1", 7000)
    };
    assert_eq!(one.pooled, vec![("kv".to_owned(), on_data_path)]);
    let two = plan(&state.services, 2, &state.backends[&2]);
    // Without an IPv6 address it is probed directly on its IPv4 one.
    assert_eq!(
        two.shared,
        vec![
            direct(ServiceProbe::Tcp, "10.1.0.2", 8080),
            direct(ServiceProbe::Udp, "10.1.0.2", 7001)
        ]
    );
    assert!(
        two.pooled.is_empty(),
        "kv's probe never reaches backend 2: {two:?}"
    );
}
