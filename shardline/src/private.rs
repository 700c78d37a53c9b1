//! A load balancer loaded into maps pinned in a private directory and never attached: what the
//! tracer, the benchmarks and the tests run packets through with `BPF_PROG_TEST_RUN`. The pins
//! are removed on drop.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::{
    maps::{Map, MapData, MapError},
    programs::ProgramError,
    Ebpf,
};

use crate::{
    loader::{self, load_balancer_sized, xdp_program, LoaderError, LB_PROGRAM},
    maps::{DataplaneMaps, MapsError},
    snapshot::Snapshot,
    testrun::{run_once, KernelRun},
};

/// Errors setting up a private dataplane.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    /// The program could not be loaded.
    #[error(transparent)]
    Load(#[from] LoaderError),
    /// The private maps could not be opened or written.
    #[error(transparent)]
    Maps(#[from] MapsError),
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A loaded, unattached load balancer with `tables` in its own pinned maps.
pub struct PrivateDataplane {
    /// The object (programs and maps).
    pub ebpf: Ebpf,
    /// The pinned maps.
    pub maps: DataplaneMaps,
    /// The tables written into them (the replay's side).
    pub tables: Snapshot,
    /// The private pin directory.
    pub pin_dir: PathBuf,
}

impl PrivateDataplane {
    /// Loads the balancer into `/sys/fs/bpf/shardline-{label}-{pid}-{n}` and applies `tables`.
    pub fn new(label: &str, tables: Snapshot) -> Result<Self, PrivateError> {
        Self::sized(label, tables, &[])
    }

    /// [`PrivateDataplane::new`] with some maps resized (`(map name, max_entries)`), e.g. a
    /// small SESSIONS map a test can fill to capacity. The tables must fit in them.
    pub fn sized(
        label: &str,
        tables: Snapshot,
        sizes: &[(&str, u32)],
    ) -> Result<Self, PrivateError> {
        let pin_dir = PathBuf::from(format!(
            "/sys/fs/bpf/shardline-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = loader::teardown(&pin_dir, None);
        let ebpf = load_balancer_sized(&pin_dir, sizes)?;
        let mut maps = DataplaneMaps::open(&pin_dir)?;
        let mut tables = tables;
        // Placements a full SESSIONS refused are not in the maps: the replay must not have them.
        for key in maps.apply(&tables)?.placements_refused {
            tables.sessions.remove(&key);
        }
        Ok(Self {
            ebpf,
            maps,
            tables,
            pin_dir,
        })
    }

    /// Runs one frame through the balancer program.
    pub fn run(&mut self, frame: &[u8]) -> Result<KernelRun, ProgramError> {
        let program = xdp_program(&mut self.ebpf, LB_PROGRAM).map_err(|e| match e {
            LoaderError::Program { source, .. } => source,
            _ => ProgramError::NotLoaded,
        })?;
        run_once(program, frame)
    }

    /// One pinned map of this balancer, opened afresh as `T` (for writes `DataplaneMaps` does
    /// not expose one by one).
    pub fn open_map<T>(&self, name: &str) -> Result<T, MapError>
    where
        T: TryFrom<Map, Error = MapError>,
    {
        T::try_from(Map::from_map_data(MapData::from_pin(
            self.pin_dir.join(name),
        )?)?)
    }
}

impl Drop for PrivateDataplane {
    fn drop(&mut self) {
        let _ = loader::teardown(&self.pin_dir, None);
    }
}
