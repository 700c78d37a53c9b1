//! The CPU part of the veth JSON: `cpu_ns_per_pkt` (the load balancer's side per forwarded
//! packet) and the `cpu` section that shows how it was reached: the whole-lab difference it
//! starts from, the backends' decapsulation taken out of it and reported on its own, the
//! topology's switch hop, the split by stage and the XDP programs' own run time. Once per
//! [`Delivery`]: the lab wired by XDP (the load balancer fed as a NIC feeds it: the headline)
//! and through the bridge (socket-fed skbs, kept as `*_bridge_fed`).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{
    cpu::{self, Measured},
    profile::{Profile, Program},
    stages::Stage,
    Outcome,
};
use crate::suite::round;

/// The three forwarders, as named in the JSON, with the topology (index into the measured
/// pair: shardline's lab, the proxies' topology) each ran in.
const CASES: [(&str, usize); 3] = [("shardline", 0), ("nginx", 1), ("tokio_proxy", 1)];
/// The baselines' names in `by_stage_ns_per_pkt`, by topology.
const BASELINES: [&str; 2] = ["baseline_shardline_lab", "baseline_proxies_topology"];

/// How frames reached the load balancer in a measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Through the bridge: the load balancer's veth receives the skbs the senders' stacks
    /// built (native XDP on veth copies each into a page first).
    Bridge,
    /// Wired by XDP (`topology::wire`): the load balancer's veth receives `xdp_frame`s, as
    /// from a NIC; the switch's work (its forwarder, its redirects, the copy of each skb
    /// entering a port) is the wire's, reported as the topology's hop.
    XdpWire,
}

impl Delivery {
    /// The name in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Delivery::Bridge => "bridge",
            Delivery::XdpWire => "xdp_wire",
        }
    }

    /// The stages that are the switch's work (the hops the topology adds) under this delivery.
    /// Wired by XDP, every skb-to-page copy happens on a switch port (no other interface
    /// receives skbs with an XDP program on it), where a NIC would have DMAed the frame.
    fn hop_stages(self) -> &'static [Stage] {
        match self {
            Delivery::Bridge => &[Stage::Bridge],
            Delivery::XdpWire => &[Stage::Switch, Stage::VethSkbCopy, Stage::Bridge],
        }
    }
}

/// `cpu_ns_per_pkt` (`{shardline, nginx, tokio_proxy}`) and the `cpu` detail section of the
/// runs made with `delivery`.
pub fn cpu_json(
    plan: &cpu::Plan,
    delivery: Delivery,
    shardline: &Outcome<Measured>,
    proxies: &Outcome<Measured>,
) -> (Value, Value) {
    let topologies = [shardline, proxies];
    let mut ns = Map::new();
    let mut whole = Map::new();
    let mut by_role = Map::new();
    let mut by_stage = Map::new();
    let mut programs = Map::new();
    let mut hop = Map::new();
    let mut without_hop = Map::new();
    let mut decap = Map::new();
    let mut errors = Map::new();
    for (i, measured) in topologies.iter().enumerate() {
        if let Ok(Measured {
            profiles: Ok(p), ..
        }) = measured
        {
            if let Some(base) = p.get(cpu::BASELINE) {
                by_stage.insert(BASELINES[i].into(), stages_json(&base.stages));
                programs.insert(BASELINES[i].into(), programs_json(base));
            }
        }
    }
    for (case, topology) in CASES {
        let measured = match topologies[topology] {
            Ok(m) if m.runs.iter().any(|r| r.case == case) => m,
            Ok(_) => {
                ns.insert(case.into(), Value::Null);
                errors.insert(
                    case.into(),
                    json!("not measured: the forwarder did not start"),
                );
                continue;
            }
            Err(e) => {
                ns.insert(case.into(), Value::Null);
                errors.insert(case.into(), json!(e));
                continue;
            }
        };
        let cost = cpu::cost(&measured.runs, case);
        let roles: Map<String, Value> = cost
            .by_role
            .iter()
            .map(|(r, v)| ((*r).to_owned(), json!(v.map(|x| round(x, 0)))))
            .collect();
        by_role.insert(case.into(), Value::Object(roles));
        whole.insert(case.into(), json!(cost.ns_per_pkt.map(|x| round(x, 0))));
        let profiled = match &measured.profiles {
            Ok(p) => p.get(case).zip(p.get(cpu::BASELINE)),
            Err(e) => {
                errors.insert(format!("{case}_profile"), json!(e));
                None
            }
        };
        // The backends' decapsulation: what their XDP program ran per packet beyond what it
        // ran for the baseline's packets (which it passes untouched).
        let decap_ns = profiled.and_then(|(p, b)| {
            Some(p.programs.get(&Program::BackendDecap)? - b.programs.get(&Program::BackendDecap)?)
        });
        if case == "shardline" {
            decap.insert(case.into(), json!(decap_ns.map(|x| round(x, 0))));
        }
        let lb_side = cost.ns_per_pkt.map(|w| w - decap_ns.unwrap_or(0.0));
        ns.insert(case.into(), json!(lb_side.map(|x| round(x, 0))));
        if let Some((p, b)) = profiled {
            let diff = stage_diff(&p.stages, &b.stages);
            // The switch's work beyond the baseline's (the hops this one-arm topology adds):
            // left in `lb_side` (a conservative figure: shardline adds one hop, the proxies two
            // and their copies), taken out in `without_hop`.
            let hop_ns: f64 = delivery
                .hop_stages()
                .iter()
                .map(|s| diff.get(s).copied().unwrap_or(0.0))
                .sum();
            hop.insert(case.into(), json!(round(hop_ns, 0)));
            without_hop.insert(case.into(), json!(lb_side.map(|l| round(l - hop_ns, 0))));
            by_stage.insert(case.into(), stages_json(&diff));
            programs.insert(case.into(), programs_json(p));
        }
    }
    let all_runs: Vec<&cpu::Run> = topologies
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .flat_map(|m| m.runs.iter())
        .collect();
    let baseline = |m: &Outcome<Measured>| {
        m.as_ref()
            .ok()
            .and_then(|m| cpu::baseline_ns_per_pkt(&m.runs))
            .map(|x| round(x, 0))
    };
    let ratio = |m: &Map<String, Value>| {
        let (n, s) = (m.get("nginx")?.as_f64()?, m.get("shardline")?.as_f64()?);
        (s > 0.0).then(|| round(n / s, 2))
    };
    let detail = json!({
        "delivery": delivery.name(),
        "offered_pps": plan.rate.round() as u64,
        "seconds_per_run": plan.duration.as_secs(),
        "rounds": plan.rounds,
        "all_forwarded": !all_runs.is_empty() && all_runs.iter().all(|r| r.fully_forwarded()),
        "baseline_ns_per_pkt": {
            "shardline_lab": baseline(shardline),
            "proxies_topology": baseline(proxies),
        },
        "whole_lab_ns_per_pkt": whole,
        "whole_lab_ratio": ratio(&whole),
        "backend_decap_ns_per_pkt": decap,
        "topology_hop_ns_per_pkt": hop,
        "without_hop_ns_per_pkt": without_hop,
        "ratio_without_hop": ratio(&without_hop),
        "by_role_ns_per_pkt": by_role,
        "by_stage_ns_per_pkt": by_stage,
        "bpf_programs": programs,
        "errors": errors,
        "runs": all_runs.iter().map(|r| r.json()).collect::<Vec<_>>(),
    });
    (Value::Object(ns), detail)
}

/// `case − baseline`, stage by stage.
fn stage_diff(case: &BTreeMap<Stage, f64>, base: &BTreeMap<Stage, f64>) -> BTreeMap<Stage, f64> {
    case.iter()
        .map(|(s, v)| (*s, v - base.get(s).copied().unwrap_or(0.0)))
        .collect()
}

/// Stages by name, in report order, with their total.
fn stages_json(stages: &BTreeMap<Stage, f64>) -> Value {
    let mut m: Map<String, Value> = stages
        .iter()
        .map(|(s, v)| (s.name().to_owned(), json!(round(*v, 0))))
        .collect();
    m.insert("total".into(), json!(round(stages.values().sum(), 0)));
    Value::Object(m)
}

/// A profiled run's program run time and runs per forwarded packet, by program.
fn programs_json(p: &Profile) -> Value {
    let m: Map<String, Value> = p
        .programs
        .iter()
        .map(|(prog, ns)| {
            (
                prog.name().to_owned(),
                json!({
                    "run_time_ns_per_pkt": round(*ns, 1),
                    "runs_per_pkt": p.runs_per_packet.get(prog).map(|x| round(*x, 2)),
                }),
            )
        })
        .collect();
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_is_the_bridge_or_the_whole_wire() {
        assert_eq!(Delivery::Bridge.hop_stages(), &[Stage::Bridge]);
        // Wired by XDP the copies of skbs entering the switch's ports are the wire's too.
        assert!(Delivery::XdpWire.hop_stages().contains(&Stage::VethSkbCopy));
        assert!(Delivery::XdpWire.hop_stages().contains(&Stage::Switch));
        assert!(!Delivery::XdpWire.hop_stages().contains(&Stage::LbProgram));
    }

    #[test]
    fn stages_differ_stage_by_stage_and_total() {
        let case = BTreeMap::from([(Stage::Bridge, 900.0), (Stage::LbProgram, 100.0)]);
        let base = BTreeMap::from([(Stage::Bridge, 500.0)]);
        let d = stage_diff(&case, &base);
        assert_eq!(d[&Stage::Bridge], 400.0);
        assert_eq!(d[&Stage::LbProgram], 100.0);
        let j = stages_json(&d);
        assert_eq!(j["bridge_hop"], json!(400.0));
        assert_eq!(j["total"], json!(500.0));
    }
}
