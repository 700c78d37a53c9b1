//! The dataplane's new-flow rate limiter (`NEW_FLOW_RATE`) as the per-packet cases drive it:
//! the flood case runs under the default limit, the tracked case and the million-flow warm-up
//! remember every flow.

use aya::maps::{MapData, PerCpuArray, PerCpuValues};
use shardline::private::PrivateDataplane;
use shardline_common::maps::NewFlowRate;

use super::{map_err, BenchError};

/// A `limit` that remembers every new flow.
pub const UNLIMITED: u32 = u32::MAX;

fn open(dp: &mut PrivateDataplane) -> Result<PerCpuArray<&mut MapData, NewFlowRate>, BenchError> {
    let map = dp
        .ebpf
        .map_mut("NEW_FLOW_RATE")
        .ok_or_else(|| BenchError::Check("the object has no NEW_FLOW_RATE map".into()))?;
    map.try_into().map_err(map_err("opening NEW_FLOW_RATE"))
}

/// Sets every CPU's new-flow limit (0: the default) and starts a fresh window, so each round
/// of a case starts alike; the `untracked` counts are kept.
pub fn set_limit(dp: &mut PrivateDataplane, limit: u32) -> Result<(), BenchError> {
    let mut map = open(dp)?;
    let now = map.get(&0, 0).map_err(map_err("reading NEW_FLOW_RATE"))?;
    let values: Vec<NewFlowRate> = now
        .iter()
        .map(|v| NewFlowRate {
            window_start_ns: 0,
            admitted: 0,
            limit,
            untracked: v.untracked,
            refused: 0,
            _pad: 0,
        })
        .collect();
    let values = PerCpuValues::try_from(values).map_err(|e| BenchError::Check(e.to_string()))?;
    map.set(0, values, 0)
        .map_err(map_err("writing NEW_FLOW_RATE"))
}

/// New flows routed without being remembered, summed over the CPUs.
pub fn untracked(dp: &mut PrivateDataplane) -> Result<u64, BenchError> {
    let map = open(dp)?;
    let now = map.get(&0, 0).map_err(map_err("reading NEW_FLOW_RATE"))?;
    Ok(now.iter().map(|v| v.untracked).sum())
}
