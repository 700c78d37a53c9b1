//! Fuzzes the strict decoder of every JSON body the API and the agents' endpoint take, with
//! arbitrary bytes: the first byte picks the body type, the rest is the body. An error or a
//! value, never a panic; a value that decodes encodes to JSON that decodes to it again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use shardline_wire::{
    strict::decode, AgentReport, AppLoad, NewMember, Placement, PoolWeight, Registration,
    Resources, SessionMeta, StateValue, Weight,
};

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(body: &[u8]) {
    let Ok(value) = decode::<T>(body) else {
        return;
    };
    let json = serde_json::to_vec(&value).expect("a decoded body encodes");
    let again: T = decode(&json).unwrap_or_else(|e| {
        panic!(
            "{value:?} encoded as {} does not decode: {e}",
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(value, again, "{}", String::from_utf8_lossy(&json));
}

fuzz_target!(|data: &[u8]| {
    let Some((which, body)) = data.split_first() else {
        return;
    };
    match which % 10 {
        0 => round_trip::<Placement>(body),
        1 => round_trip::<StateValue>(body),
        2 => round_trip::<Weight>(body),
        3 => round_trip::<PoolWeight>(body),
        4 => round_trip::<NewMember>(body),
        5 => round_trip::<SessionMeta>(body),
        6 => round_trip::<AgentReport>(body),
        7 => round_trip::<AppLoad>(body),
        8 => round_trip::<Resources>(body),
        _ => round_trip::<Registration>(body),
    }
});
