//! Data-path probes of an IPv4 VIP whose backends have only IPv6: the balancer forwards the
//! VIP's packets to them IPv4-in-IPv6, so the probes must travel that way too. The lab's
//! backends serve the services on the VIP alone, so a probe sent straight to a backend's IPv6
//! address (what the checker did before) fails on every healthy backend, and one that is not
//! decapsulated passes on none: healthy backends must pass, and the one whose decapsulator
//! stops must leave the pools.

use std::time::{Duration, Instant};

use shardline::config::{Protocol, ServiceProbe, SessionMode};
use shardline_lab::predict::PredictOptions;

use super::{healthy, id, only_the_victim_left, probes_passed, start_lab, until, BACKENDS, VICTIM};

#[test]
fn probes_of_an_ipv4_vip_reach_backends_with_only_ipv6_in_ipv6_and_take_down_one_that_stops_decapsulating(
) {
    let mut lab = start_lab();
    let mut config = lab.config.clone();
    for b in &mut config.backends {
        b.ipv4 = None;
    }
    let mut probed = Vec::new();
    for s in config.services.iter_mut().filter(|s| s.vip.is_ipv4()) {
        s.probe = match (s.mode, s.protocol) {
            (SessionMode::Header, Protocol::Udp) => Some(ServiceProbe::Udp),
            (SessionMode::Flow, Protocol::Tcp) => Some(ServiceProbe::Tcp),
            _ => continue,
        };
        assert!(s.probes_on_data_path(), "{}: the default", s.name);
        probed.push(s.name.clone());
    }
    assert_eq!(probed.len(), 2, "a udp and a tcp service: {probed:?}");
    lab.reload_config(&config)
        .unwrap_or_else(|e| panic!("reloading with IPv6-only backends and probes: {e}"));

    let interval = Duration::from_millis(PredictOptions::default().tick_ms);
    until(
        &lab,
        &probed,
        "every IPv6-only member passes its IPv4 VIP's data-path probes",
        interval * 20,
        |v| {
            v.len() == probed.len() * BACKENDS as usize
                && v.iter().all(|(_, m)| healthy(m) && probes_passed(m, 10))
        },
    );

    lab.kill(&format!("decap on backend {VICTIM}"));
    let started = Instant::now();
    let view = until(
        &lab,
        &probed,
        "the IPv6-only backend without decapsulation leaves the IPv4 VIP's pools",
        interval * 10,
        |v| {
            v.iter()
                .filter(|(_, m)| id(m) == Some(VICTIM))
                .all(|(_, m)| !healthy(m) && m["probe_failing"].as_bool() == Some(true))
        },
    );
    only_the_victim_left(&view, "data-path", &[], true);
    eprintln!(
        "IPv6-only backend {VICTIM} left the IPv4 VIP's pools {:?} after its decapsulator stopped",
        started.elapsed()
    );
}
