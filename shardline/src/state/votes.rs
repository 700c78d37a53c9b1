//! Health by majority: every LB node that can probe a backend commits its own verdict
//! ([`super::Command::HealthVote`]); a backend is down fleet-wide only while more than half of
//! the nodes that vote on it see it down, so one node's false positive (its own link, its own
//! overload) takes nothing out. A node that cannot probe a backend (it knows no agent address
//! for it) does not vote, and a single node is its own majority, as before votes existed.

use super::{apply::backend_mut, ControlState, StateError};

/// Records node `node`'s verdict on backend `id`, forgets the votes of nodes no longer among
/// `members` (the cluster's LB nodes as the voter sees them), and derives the backend's
/// fleet-wide health.
pub(super) fn vote(
    state: &mut ControlState,
    node: u64,
    id: u32,
    healthy: bool,
    members: &[u64],
) -> Result<(), StateError> {
    if !members.contains(&node) {
        return Err(StateError::NotAMember(node));
    }
    let b = backend_mut(state, id)?;
    b.votes.retain(|n, _| members.contains(n));
    b.votes.insert(node, healthy);
    b.healthy = !is_majority(b.votes.values().filter(|up| !**up).count(), b.votes.len());
    Ok(())
}

/// Records node `node`'s verdict on backend `id`'s probe of pooled `service`, forgets the
/// votes of nodes no longer among `members`, and derives whether it fails the service.
pub(super) fn service_vote(
    state: &mut ControlState,
    node: u64,
    service: &str,
    id: u32,
    healthy: bool,
    members: &[u64],
) -> Result<(), StateError> {
    if !members.contains(&node) {
        return Err(StateError::NotAMember(node));
    }
    // Refuses what `SetServiceHealth` refuses (no such service or pool, not a member) before
    // recording anything.
    let current = !backend_mut(state, id)?.failing.contains(service);
    super::pools::set_health(state, service, id, current)?;
    let b = backend_mut(state, id)?;
    let votes = b.service_votes.entry(service.to_owned()).or_default();
    votes.retain(|n, _| members.contains(n));
    votes.insert(node, healthy);
    let fails = is_majority(votes.values().filter(|up| !**up).count(), votes.len());
    super::pools::set_health(state, service, id, !fails)
}

/// Whether `down` of `voters` is more than half.
fn is_majority(down: usize, voters: usize) -> bool {
    down.saturating_mul(2) > voters
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Command;

    fn config() -> crate::config::Config {
        crate::fixtures::kv_config(&[1], None)
    }

    fn state() -> ControlState {
        ControlState::from_config(&config())
    }

    fn cast(state: &mut ControlState, node: u64, healthy: bool, members: &[u64]) -> bool {
        state
            .apply(&Command::HealthVote {
                node,
                id: 1,
                healthy,
                members: members.to_vec(),
            })
            .expect("applies");
        state.backends[&1].healthy
    }

    #[test]
    fn one_node_of_three_seeing_a_backend_down_takes_nothing_out() {
        let mut s = state();
        let three = [1, 2, 3];
        for node in three {
            assert!(cast(&mut s, node, true, &three));
        }
        assert!(cast(&mut s, 2, false, &three), "1 of 3 is no majority");
        assert!(
            cast(&mut s, 2, false, &three),
            "a repeated vote counts once"
        );
        assert!(!cast(&mut s, 3, false, &three), "2 of 3 is");
        assert!(s.backends[&1].effective_weight() == 0 && !s.backends[&1].usable());
        assert!(cast(&mut s, 2, true, &three), "back to 1 of 3: up again");
    }

    #[test]
    fn only_nodes_that_probe_vote_and_a_single_node_is_its_own_majority() {
        let mut s = state();
        assert!(
            !cast(&mut s, 1, false, &[1, 2, 3]),
            "the only prober decides"
        );
        assert!(cast(&mut s, 1, true, &[1, 2, 3]));
        assert!(cast(&mut s, 2, true, &[1, 2]));
        assert!(cast(&mut s, 1, false, &[1, 2]), "1 of 2 is half, not more");
        assert!(!cast(&mut s, 2, false, &[1, 2]));
    }

    #[test]
    fn a_removed_node_s_vote_is_forgotten() {
        let mut s = state();
        cast(&mut s, 1, true, &[1, 2, 3]);
        cast(&mut s, 2, false, &[1, 2, 3]);
        assert!(!cast(&mut s, 3, false, &[1, 2, 3]));
        assert!(cast(&mut s, 1, true, &[1, 2]), "3 left: 1 of 2 down");
        assert_eq!(
            s.backends[&1].votes.keys().copied().collect::<Vec<_>>(),
            [1, 2]
        );
    }

    #[test]
    fn a_vote_on_an_unknown_backend_or_from_a_stranger_changes_nothing() {
        let mut s = state();
        let before = s.clone();
        for (node, id) in [(1, 9), (4, 1)] {
            let refused = s.apply(&Command::HealthVote {
                node,
                id,
                healthy: false,
                members: vec![1, 2, 3],
            });
            assert!(refused.is_err(), "node {node}, backend {id}");
        }
        assert_eq!(s, before);
    }

    /// Backends 1 to 3, with `kv` pooled on 1 and 2.
    fn pooled() -> ControlState {
        let mut config = crate::fixtures::kv_config(&[1, 2, 3], None);
        config.services[0].backends = Some(vec![
            crate::config::PoolMember::Id(1),
            crate::config::PoolMember::Id(2),
        ]);
        ControlState::from_config(&config)
    }

    /// Node `node`'s vote on backend `id`'s probe of the pooled `kv`; whether `id` serves it.
    fn cast_kv(s: &mut ControlState, node: u64, id: u32, healthy: bool, members: &[u64]) -> bool {
        s.apply(&Command::ServiceHealthVote {
            node,
            service: "kv".into(),
            id,
            healthy,
            members: members.to_vec(),
        })
        .expect("applies");
        s.backends[&id].serves("kv")
    }

    #[test]
    fn a_pool_member_fails_a_service_only_when_most_probing_nodes_see_it_fail() {
        let mut s = pooled();
        let three = [1, 2, 3];
        for node in three {
            assert!(cast_kv(&mut s, node, 2, true, &three));
        }
        assert!(
            cast_kv(&mut s, 1, 2, false, &three),
            "1 of 3 is no majority"
        );
        assert!(
            cast_kv(&mut s, 1, 2, false, &three),
            "a repeated vote counts once"
        );
        assert!(!cast_kv(&mut s, 3, 2, false, &three), "2 of 3 is");
        assert!(
            s.backends[&2].usable(),
            "it still serves every other service"
        );
        assert!(cast_kv(&mut s, 3, 2, true, &three), "back to 1 of 3");
        assert!(
            cast_kv(&mut s, 2, 1, true, &three),
            "each member has its own count"
        );
        assert!(
            !cast_kv(&mut s, 1, 1, false, &[1]),
            "a single node is its own majority"
        );
    }

    #[test]
    fn a_service_vote_outside_a_pool_or_from_a_stranger_changes_nothing() {
        let mut s = pooled();
        let before = s.clone();
        for (node, service, id) in [(4, "kv", 1), (1, "kv", 3), (1, "nope", 1), (1, "kv", 9)] {
            let refused = s.apply(&Command::ServiceHealthVote {
                node,
                service: service.into(),
                id,
                healthy: false,
                members: vec![1, 2, 3],
            });
            assert!(refused.is_err(), "node {node}, {service}, backend {id}");
        }
        assert_eq!(s, before);
    }

    #[test]
    fn a_reloaded_configuration_keeps_the_votes() {
        let mut s = state();
        cast(&mut s, 1, false, &[1, 2, 3]);
        cast(&mut s, 2, false, &[1, 2, 3]);
        let tables = crate::state::ConfigTables::of(&config());
        s.apply(&Command::LoadConfig(tables)).expect("reloads");
        let b = &s.backends[&1];
        assert!(!b.healthy && b.votes.len() == 2, "{b:?}");
    }
}
