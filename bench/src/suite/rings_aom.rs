//! The pools' rings in the array-of-maps layout (`BENCH_RINGS`) for the per-packet case
//! `pool_table_aom_v4`, which weighs that layout against the one big `MAGLEV` array.

use aya::maps::{Array, ArrayOfMaps, MapData};
use shardline::private::PrivateDataplane;
use shardline_common::consts::MAX_RING_SIZE;

use super::{map_err, BenchError};

/// Copies every pool's live ring into an inner array of `BENCH_RINGS` at its service id, for
/// `pool_table_aom_v4`: the same ring the `MAGLEV` array holds, in the other layout.
pub fn fill(lb: &mut PrivateDataplane) -> Result<(), BenchError> {
    let map = lb
        .ebpf
        .map_mut("BENCH_RINGS")
        .ok_or_else(|| BenchError::Check("the object has no BENCH_RINGS map".into()))?;
    let mut outer: ArrayOfMaps<&mut MapData, Array<MapData, u32>> =
        map.try_into().map_err(map_err("opening BENCH_RINGS"))?;
    for (service, ring) in &lb.tables.rings {
        let mut inner = Array::<MapData, u32>::create(MAX_RING_SIZE, 0)
            .map_err(map_err("creating a ring's inner array"))?;
        for (slot, backend) in ring.iter().enumerate() {
            inner
                .set(slot as u32, backend, 0)
                .map_err(map_err("filling a ring's inner array"))?;
        }
        outer
            .set(*service, &inner, 0)
            .map_err(map_err("setting a ring in BENCH_RINGS"))?;
    }
    Ok(())
}
