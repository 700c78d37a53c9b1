//! The executables a lab starts: `shardline` (the daemon, the decapsulator, the agent) and
//! `shardline-lab` (the echo backends, the autoscale hook's backend builder).

use std::path::{Path, PathBuf};

/// Where the lab's processes come from.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The shipped `shardline` binary.
    pub shardline: PathBuf,
    /// The `shardline-lab` binary.
    pub lab: PathBuf,
}

/// A binary the lab needs was not found.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot find the `{name}` binary next to {beside} or in its parent directory; build it \
     first (`cargo build --release -p {package}`) or point {env} at it"
)]
pub struct MissingBinary {
    /// The binary's file name.
    pub name: &'static str,
    /// The cargo package that builds it.
    pub package: &'static str,
    /// The environment variable that overrides the search.
    pub env: &'static str,
    /// Where it was looked for.
    pub beside: String,
}

impl Binaries {
    /// Finds both binaries beside the running executable, or one directory up (a test binary
    /// runs from `target/<profile>/deps`). `SHARDLINE_BIN` and `SHARDLINE_LAB_BIN` override.
    pub fn locate() -> Result<Self, MissingBinary> {
        let exe = std::env::current_exe().unwrap_or_default();
        Ok(Self {
            shardline: find(&exe, "shardline", "shardline-cli", "SHARDLINE_BIN")?,
            lab: find(&exe, "shardline-lab", "shardline-lab", "SHARDLINE_LAB_BIN")?,
        })
    }
}

fn find(
    exe: &Path,
    name: &'static str,
    package: &'static str,
    env: &'static str,
) -> Result<PathBuf, MissingBinary> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    let dir = exe.parent().unwrap_or(Path::new("."));
    [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| MissingBinary {
            name,
            package,
            env,
            beside: exe.display().to_string(),
        })
}
