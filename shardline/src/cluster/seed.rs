//! Whether a leader that starts loads its configuration file into the replicated state.
//!
//! A multi-node cluster loads it only into an empty state: the state is the cluster's, and a
//! file is one node's. A cluster of one loads it when the file changed since the state last
//! loaded one (the user edited it), and otherwise keeps the state, so backends added, changed
//! or removed through the API survive a plain restart.

use std::fmt;

use crate::state::{tables_digest, ConfigTables, ControlState};

/// Why the configuration file is loaded at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedReason {
    /// The state has no services and no backends yet.
    Empty,
    /// The state does not record the tables it last loaded (a store written before it did):
    /// loaded as every start did then.
    Unrecorded,
    /// The file's tables differ from the ones the state last loaded.
    Edited,
}

impl fmt::Display for SeedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SeedReason::Empty => "the replicated state was empty",
            SeedReason::Unrecorded => "the stored state does not record which file it loaded",
            SeedReason::Edited => "the file changed since it was last loaded",
        })
    }
}

/// Whether a leader of a cluster (`alone`: of one voter) whose state is `state` loads the
/// file's `tables`, and why; `None` keeps the state.
pub fn should_seed(alone: bool, state: &ControlState, tables: &ConfigTables) -> Option<SeedReason> {
    if state.services.is_empty() && state.backends.is_empty() {
        return Some(SeedReason::Empty);
    }
    if !alone {
        return None;
    }
    match state.loaded {
        None => Some(SeedReason::Unrecorded),
        Some(digest) if digest != tables_digest(tables) => Some(SeedReason::Edited),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cluster::codec::image::{decode_image, encode_image},
        config::{BackendConfig, Config},
        state::Command,
    };

    fn config() -> Config {
        crate::fixtures::kv_config(&[1], None)
    }

    fn loaded() -> (ControlState, ConfigTables) {
        let tables = ConfigTables::of(&config());
        let mut state = ControlState::default();
        state
            .apply(&Command::LoadConfig(tables.clone()))
            .expect("loads");
        (state, tables)
    }

    fn added(state: &mut ControlState) {
        let mut b: BackendConfig = state.backends.get(&1).expect("backend 1").config.clone();
        b.id = 9;
        b.ipv4 = Some("10.0.0.19".parse().expect("an address"));
        b.mac = "02:00:00:00:00:19".into();
        state.apply(&Command::UpsertBackend(b)).expect("adds");
    }

    #[test]
    fn an_empty_state_is_seeded_alone_or_not() {
        let tables = ConfigTables::of(&config());
        for alone in [true, false] {
            let got = should_seed(alone, &ControlState::default(), &tables);
            assert_eq!(got, Some(SeedReason::Empty), "alone: {alone}");
        }
    }

    #[test]
    fn a_cluster_of_one_keeps_api_changes_when_the_file_is_unchanged() {
        let (mut state, tables) = loaded();
        added(&mut state);
        assert_eq!(should_seed(true, &state, &tables), None);
        // And after the state went through a snapshot image, as it does across restarts.
        let state = decode_image(&encode_image(&state)).expect("image decodes");
        assert_eq!(should_seed(true, &state, &tables), None);
    }

    #[test]
    fn a_cluster_of_one_loads_an_edited_file() {
        let (state, mut tables) = loaded();
        tables.backends[0].weight += 1;
        assert_eq!(should_seed(true, &state, &tables), Some(SeedReason::Edited));
    }

    #[test]
    fn a_state_that_records_no_file_is_loaded_alone() {
        let (mut state, tables) = loaded();
        state.loaded = None;
        assert_eq!(
            should_seed(true, &state, &tables),
            Some(SeedReason::Unrecorded)
        );
    }

    #[test]
    fn a_cluster_of_many_seeds_only_an_empty_state() {
        let (mut state, mut tables) = loaded();
        tables.backends[0].weight += 1;
        assert_eq!(should_seed(false, &state, &tables), None);
        state.loaded = None;
        assert_eq!(should_seed(false, &state, &tables), None);
    }

    #[test]
    fn load_config_records_the_tables_and_a_reload_updates_them() {
        let (mut state, mut tables) = loaded();
        assert_eq!(state.loaded, Some(tables_digest(&tables)));
        tables.backends[0].weight += 1;
        state
            .apply(&Command::LoadConfig(tables.clone()))
            .expect("reloads");
        assert_eq!(state.loaded, Some(tables_digest(&tables)));
    }

    #[test]
    fn a_state_written_before_the_record_existed_decodes() {
        let (state, _) = loaded();
        let mut json = serde_json::to_value(&state).expect("serializes");
        json.as_object_mut().expect("an object").remove("loaded");
        let old = serde_json::to_vec(&json).expect("serializes");
        let back = decode_image(&old).expect("an old JSON snapshot decodes");
        assert_eq!(back.loaded, None);
        assert_eq!(back.backends, state.backends);
    }
}
