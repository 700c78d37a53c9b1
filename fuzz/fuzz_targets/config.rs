//! Fuzzes the configuration parser and validation with arbitrary text: an error or a config
//! that validates, never a panic; a config that loads loads again identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardline_config::Config;

fuzz_target!(|text: &str| {
    if let Ok(config) = Config::parse(text, "fuzz.toml") {
        config.validate().expect("parse returns only validated configs");
        let again = Config::parse(text, "fuzz.toml").expect("deterministic");
        assert_eq!(config, again);
    }
});
