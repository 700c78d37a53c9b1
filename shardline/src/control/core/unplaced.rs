//! The unplaced tables ([`ControlState::unplaced_tables`]: the default table and the pools'
//! rings, which give an unplaced session its home) kept from one tick to the next while what
//! they are built from (services, backends, encapsulation, ICMP and flow options) stays the
//! same. Building them runs Maglev over every service (about 2 ms here); a tick that scales
//! a session out of its home needs them, and most ticks' states differ from the last one's
//! in placements only.

use crate::{
    config::{Encap, IcmpConfig, ServiceConfig},
    snapshot::Snapshot,
    state::{persistent::Map, BackendEntry, ControlState},
};

/// The tables last built and the state's parts they were built from.
#[derive(Default)]
pub(super) struct UnplacedCache {
    built: Option<(Inputs, Snapshot)>,
}

struct Inputs {
    encap: Encap,
    flow_idle_secs: u32,
    icmp: IcmpConfig,
    services: Vec<ServiceConfig>,
    backends: Map<u32, BackendEntry>,
}

impl Inputs {
    fn of(state: &ControlState) -> Self {
        Self {
            encap: state.encap.clone(),
            flow_idle_secs: state.flow_idle_secs,
            icmp: state.icmp.clone(),
            services: state.services.clone(),
            backends: state.backends.clone(),
        }
    }

    fn still(&self, state: &ControlState) -> bool {
        self.flow_idle_secs == state.flow_idle_secs
            && self.encap == state.encap
            && self.icmp == state.icmp
            && self.services == state.services
            && (self.backends.ptr_eq(&state.backends) || self.backends == state.backends)
    }
}

impl UnplacedCache {
    /// The tables kept, taken out, if `state` builds the same ones; else none (a tick builds
    /// them when it first needs them).
    pub(super) fn take(&mut self, state: &ControlState) -> Option<Snapshot> {
        match self.built.take() {
            Some((inputs, tables)) if inputs.still(state) => {
                self.built = Some((inputs, Snapshot::default()));
                Some(tables)
            }
            _ => None,
        }
    }

    /// Keeps `tables`, built from `state` (or taken from here for it), for the next tick.
    pub(super) fn keep(&mut self, state: &ControlState, tables: Snapshot) {
        let inputs = match self.built.take() {
            Some((inputs, _)) if inputs.still(state) => inputs,
            _ => Inputs::of(state),
        };
        self.built = Some((inputs, tables));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, Config};
    use crate::state::Command;

    fn state() -> ControlState {
        let text = "interface = \"x0\"\n[encap]\nsource_v4 = \"10.0.0.1\"\n[[services]]\nname = \"kv\"\nvip = \"10.0.0.100\"\nport = 7000\nprotocol = \"udp\"\nmode = \"header\"\n";
        let config = Config::parse(text, "test").expect("valid");
        let mut state = ControlState::from_config(&config);
        for id in 1..=3 {
            upsert(&mut state, id, 1);
        }
        state
    }

    fn upsert(state: &mut ControlState, id: u32, weight: u32) {
        let config = BackendConfig {
            id,
            ipv4: Some(std::net::Ipv4Addr::from(0x0a01_0000 | id)),
            ipv6: None,
            mac: format!("02:00:00:00:00:{id:02x}"),
            weight,
            agent: None,
            capacity: None,
            nexthop: Default::default(),
        };
        state.apply(&Command::UpsertBackend(config)).expect("valid");
    }

    #[test]
    fn the_tables_are_kept_while_their_inputs_stay_and_rebuilt_when_a_backend_changes() {
        let mut state = state();
        let mut cache = UnplacedCache::default();
        assert!(cache.take(&state).is_none(), "nothing built yet");
        cache.keep(&state, state.unplaced_tables());
        let kept = cache.take(&state).expect("same inputs");
        let fresh = state.unplaced_tables();
        assert!(kept.maglev == fresh.maglev, "the default table differs");
        assert!(kept.backends == fresh.backends, "the backends differ");
        cache.keep(&state, kept);
        // A placement changes nothing the tables are built from.
        state
            .apply(&Command::Place {
                session: crate::state::SessionRef {
                    service: "kv".into(),
                    session: 7,
                },
                backends: vec![1, 2],
            })
            .expect("valid");
        assert!(cache.take(&state).is_some(), "a placement keeps them");
        // A weight does: they are built again.
        cache.keep(&state, state.unplaced_tables());
        upsert(&mut state, 2, 3);
        assert!(cache.take(&state).is_none(), "a weight changed");
        // A backend marked down, too.
        cache.keep(&state, state.unplaced_tables());
        state.backends.get_mut(&3).expect("backend 3").healthy = false;
        assert!(cache.take(&state).is_none(), "backend 3 went down");
    }
}
