//! Unit tests of `shardline-config`.

use super::*;

const GOOD: &str = r#"
    interface = "eth0"
    [encap]
    source_v4 = "10.0.0.2"
    [[services]]
    name = "kv"
    vip = "10.100.0.1"
    port = 7000
    protocol = "udp"
    mode = "header"
    [[backends]]
    id = 1
    ipv4 = "10.0.0.11"
    mac = "02:00:00:00:00:11"
    [[sessions]]
    service = "kv"
    session = 42
    backends = [1]
"#;

fn err(text: &str) -> String {
    Config::parse(text, "test.toml").unwrap_err().to_string()
}

#[test]
fn accepts_a_good_config() {
    let c = Config::parse(GOOD, "test.toml").unwrap();
    assert_eq!(c.backends[0].weight, 1);
    assert_eq!(c.xdp_mode, XdpAttachMode::Auto);
    assert_eq!(c.sessions[0].session, SessionId::Id(42));
}

#[test]
fn errors_name_the_field() {
    assert!(err(&GOOD.replace("mode = \"header\"", "mode = \"sideways\"")).contains("mode"));
    assert!(
        err(&GOOD.replace("protocol = \"udp\"", "protocol = \"tcp\"")).contains("services[0].mode")
    );
    assert!(err(&GOOD.replace("02:00:00:00:00:11", "nope")).contains("backends[0].mac"));
    assert!(err(&GOOD.replace("backends = [1]", "backends = [7]")).contains("unknown backend id 7"));
    assert!(err(&GOOD.replace("session = 42", "session = \"10.0.0.1\""))
        .contains("sessions[0].session"));
    assert!(err(&GOOD.replace("source_v4 = \"10.0.0.2\"", "")).contains("encap.source_v4"));
    // A backend with only IPv6 gets IPv4 clients IPv4-in-IPv6, from the IPv6 source.
    let v6_only = GOOD.replace("ipv4 = \"10.0.0.11\"", "ipv6 = \"fd00::11\"");
    assert!(err(&v6_only).contains("encap.source_v6"));
    let with_source = v6_only.replace("[encap]", "[encap]\nsource_v6 = \"fd00::2\"");
    assert!(Config::parse(&with_source, "test.toml").is_ok());
    assert!(err(&GOOD.replace("port = 7000", "port = 70000")).contains("port"));
    assert!(err(&format!("{GOOD}\nbogus = 1")).contains("bogus"));
}

#[test]
fn an_ipip_source_prefix_stands_in_for_source_v4_and_is_checked() {
    let prefixed = GOOD.replace(
        "source_v4 = \"10.0.0.2\"",
        "source_v4_prefix = \"172.16.0.0/16\"",
    );
    let c = Config::parse(&prefixed, "t").unwrap();
    assert_eq!(
        c.encap.ipip_source(),
        Some(([172, 16, 0, 0], [0, 0, 255, 255]))
    );
    let fixed = Config::parse(GOOD, "t").unwrap();
    assert_eq!(fixed.encap.ipip_source(), Some(([10, 0, 0, 2], [0; 4])));
    let host_bits = prefixed.replace("172.16.0.0/16", "172.16.0.1/16");
    assert!(err(&host_bits).contains("the network is 172.16.0.0/16"));
    assert!(err(&prefixed.replace("/16", "/32")).contains("prefix length 32"));
}

#[test]
fn the_handoff_window_defaults_to_10_s_and_is_at_most_an_hour() {
    let c = Config::parse(GOOD, "test.toml").unwrap();
    assert_eq!(c.handoff_window(), std::time::Duration::from_secs(10));
    for secs in [0, 3600] {
        let c = Config::parse(&format!("handoff_window_secs = {secs}\n{GOOD}"), "t").unwrap();
        assert_eq!(c.handoff_window_secs, secs);
    }
    let e = err(&format!("handoff_window_secs = 3601\n{GOOD}"));
    assert!(
        e.contains("`handoff_window_secs`") && e.contains("0 to 3600") && e.contains("3601"),
        "{e}"
    );
}

/// `GOOD` with a second backend and `pool` as the service's `backends` line.
fn with_pool(pool: &str) -> String {
    GOOD.replace("mode = \"header\"", &format!("mode = \"header\"\n{pool}"))
        .replace(
            "[[sessions]]",
            "[[backends]]\nid = 2\nipv4 = \"10.0.0.12\"\nmac = \"02:00:00:00:00:12\"\n[[sessions]]",
        )
}

#[test]
fn a_service_names_its_pool_with_weights_and_a_ring_size() {
    let c = Config::parse(GOOD, "t").unwrap();
    assert_eq!(
        (c.services[0].backends.as_ref(), c.services[0].ring_slots()),
        (None, 0)
    );
    assert!(c.services[0].served_by(2));
    let c = Config::parse(&with_pool("backends = [1, { id = 2, weight = 3 }]"), "t").unwrap();
    let s = &c.services[0];
    assert_eq!(
        s.backends.as_deref(),
        Some(&[PoolMember::Id(1), PoolMember::Weighted { id: 2, weight: 3 }][..])
    );
    assert_eq!(
        s.ring_slots(),
        251,
        "two members: the smallest ring of 200+ slots"
    );
    assert!(s.served_by(1) && s.served_by(2) && !s.served_by(3));
    let c = Config::parse(&with_pool("backends = [1]\nring_size = 13"), "t").unwrap();
    assert_eq!(c.services[0].ring_slots(), 13);
    assert_eq!(default_ring_size(6), 1_021);
    assert_eq!(default_ring_size(10_000), 65_537);
    // The configuration reads back as it was written.
    let c = Config::parse(&with_pool("backends = [1, { id = 2, weight = 3 }]"), "t").unwrap();
    let again: ServiceConfig = toml::from_str(&toml::to_string(&c.services[0]).unwrap()).unwrap();
    assert_eq!(again, c.services[0]);
}

#[test]
fn pool_errors_name_the_service_and_the_backend() {
    let e = err(&with_pool("backends = [1, 9]"));
    assert!(
        e.contains("services[0].backends")
            && e.contains("\"kv\"")
            && e.contains("unknown backend id 9"),
        "{e}"
    );
    let e = err(&with_pool("backends = [1, 1]"));
    assert!(e.contains("backend id 1 listed twice"), "{e}");
    let e = err(&with_pool("backends = []"));
    assert!(e.contains("at least one backend"), "{e}");
    let e = err(&with_pool("backends = [1]\nring_size = 12"));
    assert!(
        e.contains("services[0].ring_size") && e.contains("prime"),
        "{e}"
    );
    let e = err(&with_pool("backends = [1, 2]\nring_size = 70001"));
    assert!(e.contains("at most 65537"), "{e}");
    let e = err(&with_pool("ring_size = 13"));
    assert!(e.contains("has no pool"), "{e}");
    // A static session on a backend outside its service's pool.
    let e = err(&with_pool("backends = [2]"));
    assert!(
        e.contains("sessions[0].backends")
            && e.contains("backend 1 is not in the pool of service \"kv\""),
        "{e}"
    );
    // Too many large rings for the ring space.
    let mut many = with_pool("backends = [1]\nring_size = 65537");
    for i in 0..4 {
        many = many.replace(
            "[[sessions]]",
            &format!(
                "[[services]]\nname = \"s{i}\"\nvip = \"10.100.0.{}\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\nbackends = [1]\nring_size = 65537\n[[sessions]]",
                i + 2
            ),
        );
    }
    let e = err(&many);
    assert!(e.contains("the pools' rings need"), "{e}");
}

#[test]
fn api_section_has_defaults_and_errors_name_its_fields() {
    let c = Config::parse(GOOD, "test.toml").unwrap();
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:7900");
    assert_eq!((c.api.token_file.as_ref(), c.api.body_limit), (None, 65536));
    let with = |api: &str| format!("{GOOD}\n[api]\n{api}\n");
    let c = Config::parse(&with("listen = \"0.0.0.0:80\"\ntoken_file = \"/t\""), "t").unwrap();
    assert_eq!(c.api.token_file.as_deref(), Some(Path::new("/t")));
    let e = err(&with("listen = \"localhost\""));
    assert!(e.contains("listen"), "{e}");
    let e = err(&with("body_limit = 10"));
    assert!(e.contains("api.body_limit") && e.contains("1024"), "{e}");
    let e = err(&with("token_file = \"\""));
    assert!(e.contains("api.token_file"), "{e}");
    let e = err(&with("tokn_file = \"/t\""));
    assert!(e.contains("tokn_file"), "{e}");
}

#[test]
fn a_service_probe_is_tcp_udp_or_http() {
    let c = Config::parse(GOOD, "test.toml").unwrap();
    assert_eq!(c.services[0].probe, None, "not probed by default");
    let udp = GOOD.replace("mode = \"header\"", "mode = \"header\"\nprobe = \"udp\"");
    let c = Config::parse(&udp, "test.toml").unwrap();
    assert_eq!(c.services[0].probe, Some(ServiceProbe::Udp));
    let bad = GOOD.replace("mode = \"header\"", "mode = \"header\"\nprobe = \"icmp\"");
    let e = Config::parse(&bad, "test.toml").unwrap_err().to_string();
    assert!(e.contains("icmp") && e.contains("tcp"), "{e}");
}

#[test]
fn a_probe_travels_the_data_path_where_it_can_and_says_why_not_when_asked_to() {
    let udp = GOOD.replace("mode = \"header\"", "mode = \"header\"\nprobe = \"udp\"");
    let c = Config::parse(&udp, "test.toml").unwrap();
    assert_eq!(c.services[0].probe_path, ProbePath::Auto);
    assert!(c.services[0].probes_on_data_path(), "encap, IPv4, udp");
    let direct = udp.replace(
        "probe = \"udp\"",
        "probe = \"udp\"\nprobe_path = \"direct\"",
    );
    let c = Config::parse(&direct, "test.toml").unwrap();
    assert!(!c.services[0].probes_on_data_path());
    let http = udp.replace("probe = \"udp\"", "probe = \"http\"");
    let c = Config::parse(&http, "test.toml").unwrap();
    assert!(
        !c.services[0].probes_on_data_path(),
        "auto leaves http direct: it needs a route to the VIP"
    );
    assert_eq!(c.services[0].probe_http_path(), "/");
    let forced = http.replace(
        "probe = \"http\"",
        "probe = \"http\"\nprobe_path = \"datapath\"",
    );
    let c = Config::parse(&forced, "test.toml").unwrap();
    assert!(
        c.services[0].probes_on_data_path(),
        "http on the data path when asked"
    );
    let l2 = forced.replace(
        "mode = \"header\"",
        "mode = \"header\"\nforward = \"l2dsr\"",
    );
    let e = Config::parse(&l2, "test.toml").unwrap_err().to_string();
    assert!(
        e.contains("probe_path") && e.contains("encapsulating"),
        "{e}"
    );
    let alone = GOOD.replace(
        "mode = \"header\"",
        "mode = \"header\"\nprobe_path = \"direct\"",
    );
    let e = Config::parse(&alone, "test.toml").unwrap_err().to_string();
    assert!(e.contains("no probe"), "{e}");
}

#[test]
fn an_http_probe_takes_a_request_path_and_an_http_status_and_other_probes_neither() {
    let http = GOOD.replace("mode = \"header\"", "mode = \"header\"\nprobe = \"http\"");
    let ok = http.replace(
        "probe = \"http\"",
        "probe = \"http\"\nprobe_http_path = \"/healthz?deep=1\"\nprobe_http_status = 204",
    );
    let c = Config::parse(&ok, "test.toml").unwrap();
    assert_eq!(c.services[0].probe_http_path(), "/healthz?deep=1");
    assert_eq!(c.services[0].probe_http_status, Some(204));
    for (line, field, why) in [
        (
            "probe_http_path = \"healthz\"",
            "probe_http_path",
            "start with /",
        ),
        ("probe_http_path = \"/a b\"", "probe_http_path", "no spaces"),
        (
            "probe_http_path = \"/a\\r\\nX: y\"",
            "probe_http_path",
            "control",
        ),
        ("probe_http_status = 99", "probe_http_status", "100 to 599"),
        ("probe_http_status = 600", "probe_http_status", "100 to 599"),
    ] {
        let bad = http.replace("probe = \"http\"", &format!("probe = \"http\"\n{line}"));
        let e = Config::parse(&bad, "test.toml").unwrap_err().to_string();
        assert!(e.contains(field) && e.contains(why), "{line}: {e}");
    }
    let udp = GOOD.replace(
        "mode = \"header\"",
        "mode = \"header\"\nprobe = \"udp\"\nprobe_http_status = 200",
    );
    let e = Config::parse(&udp, "test.toml").unwrap_err().to_string();
    assert!(
        e.contains("probe_http_status") && e.contains("other than"),
        "{e}"
    );
}

#[test]
fn quic_services_are_udp_with_a_server_id_that_fits() {
    let quic = GOOD.replace("mode = \"header\"", "mode = \"quic\"");
    let quic = quic.replace("session = 42", "session = \"192.0.2.1\"");
    let c = Config::parse(&quic, "test.toml").unwrap();
    let layout = c.services[0].cid_layout().unwrap();
    assert_eq!((layout.rotation, layout.server_id_len), (0, 2));
    let gen = quic.replace("mode = \"quic\"", "mode = \"quic\"\ncid_generation = 9");
    let c = Config::parse(&gen, "test.toml").unwrap();
    assert_eq!(c.services[0].cid_layout().unwrap().rotation, 2);
    let ids = c.describe_quic_ids();
    assert!(
        ids.contains("config rotation 2, server id 2 octets"),
        "{ids}"
    );
    assert!(ids.contains("starts 0x40 + (N - 1)"), "{ids}");
    assert!(ids.contains("backend 1: server id 0x0001"), "{ids}");
    assert!(
        err(&quic.replace("protocol = \"udp\"", "protocol = \"tcp\""))
            .contains("quic mode needs protocol")
    );
    let one = quic.replace("mode = \"quic\"", "mode = \"quic\"\nserver_id_len = 1");
    assert!(err(&one.replace("id = 1", "id = 300")).contains("cannot hold backend id 300"));
    let five = quic.replace("mode = \"quic\"", "mode = \"quic\"\nserver_id_len = 5");
    assert!(err(&five).contains("services[0].server_id_len"));
    assert!(
        err(&GOOD.replace("mode = \"header\"", "mode = \"header\"\nserver_id_len = 2"))
            .contains("need mode = \"quic\"")
    );
    assert!(err(&quic.replace("session = \"192.0.2.1\"", "session = 1")).contains("client address"));
}
