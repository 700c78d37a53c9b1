//! The reference against the code: same keys, same integer ranges, and `docs/config.md` as
//! [`render`] writes it.

use std::collections::BTreeSet;

use super::*;

/// The keys [`SAMPLE`] sets itself (so their value in [`sample`] is not serde's default).
fn set_in_sample() -> BTreeSet<String> {
    let table: toml::Table = toml::from_str(SAMPLE).unwrap();
    let mut out = BTreeMap::new();
    flatten("", &serde_json::to_value(table).unwrap(), &mut out);
    out.into_keys().collect()
}

#[test]
fn every_key_of_the_types_is_in_the_reference_and_no_other() {
    let code: BTreeSet<String> = keys_of(&sample()).into_keys().collect();
    let reference: BTreeSet<String> = KEYS.iter().map(|k| k.key.to_owned()).collect();
    assert_eq!(reference.len(), KEYS.len(), "a key is listed twice in KEYS");
    let missing: Vec<_> = code.difference(&reference).collect();
    assert!(
        missing.is_empty(),
        "keys of the config types missing from config/src/reference.rs KEYS: {missing:?}"
    );
    let stale: Vec<_> = reference.difference(&code).collect();
    assert!(
        stale.is_empty(),
        "keys in config/src/reference.rs KEYS that the config types do not have (or that \
         SAMPLE does not reach: set them there): {stale:?}"
    );
}

#[test]
fn defaults_read_from_the_code_are_not_set_by_the_sample() {
    let set = set_in_sample();
    for k in KEYS.iter().filter(|k| k.default == Source::Code) {
        assert!(
            !set.contains(k.key),
            "{}: SAMPLE sets it, so its rendered default would be SAMPLE's value; mark it \
             `Unset` or leave it out of SAMPLE",
            k.key
        );
    }
    for k in KEYS.iter().filter(|k| k.default == Source::Unset) {
        assert!(
            set.contains(k.key),
            "{}: `Unset` keys are set in SAMPLE",
            k.key
        );
    }
}

/// [`SAMPLE`] with `key` (a reference path) set to `value`, parsed and validated.
fn with(key: &str, value: i64) -> Result<Config, crate::ConfigError> {
    let mut table: toml::Table = toml::from_str(SAMPLE).unwrap();
    let mut at = &mut table;
    let parts: Vec<&str> = key.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let item = match part.strip_suffix("[]") {
            Some(name) => at
                .get_mut(name)
                .and_then(|v| v.as_array_mut())
                .and_then(|a| a.first_mut()),
            None => at.get_mut(*part),
        };
        at = item
            .and_then(|v| v.as_table_mut())
            .unwrap_or_else(|| panic!("{key}: SAMPLE has no table at {part}"));
    }
    at.insert(
        parts[parts.len() - 1].to_owned(),
        toml::Value::Integer(value),
    );
    Config::parse(&toml::to_string(&table).unwrap(), key)
}

#[test]
fn integer_ranges_are_the_ones_validate_enforces() {
    for k in KEYS {
        let Range::Int(lo, hi) = k.range else {
            continue;
        };
        if let Err(e) = with(k.key, lo) {
            panic!(
                "{}: the reference says {lo} is valid, the code says {e}",
                k.key
            );
        }
        if lo > i64::MIN {
            assert!(
                with(k.key, lo - 1).is_err(),
                "{}: {} is accepted",
                k.key,
                lo - 1
            );
        }
        if hi < i64::MAX {
            if let Err(e) = with(k.key, hi) {
                panic!(
                    "{}: the reference says {hi} is valid, the code says {e}",
                    k.key
                );
            }
            assert!(
                with(k.key, hi + 1).is_err(),
                "{}: {} is accepted",
                k.key,
                hi + 1
            );
        }
    }
}

#[test]
fn docs_config_md_is_the_rendered_reference() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/config.md");
    let want = render();
    if std::env::var_os("SHARDLINE_UPDATE_DOCS").is_some() {
        std::fs::write(path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "docs/config.md is stale: run `SHARDLINE_UPDATE_DOCS=1 cargo test -p shardline-config \
         reference` and commit the result"
    );
}

#[test]
fn every_key_renders_with_a_default_and_a_range() {
    let text = render();
    for k in KEYS {
        assert!(text.contains(&format!("| `{}` |", k.key)), "{}", k.key);
    }
    assert!(
        text.contains("| `api.metrics_top_sessions` | `100` | 0 to 100000 |"),
        "{text}"
    );
    assert!(
        text.contains("| `control.core` | the last core |"),
        "{text}"
    );
}
