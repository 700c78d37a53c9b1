//! The lab's processes: each started in its namespace with a log and a ready file and waited
//! for, found again by what it is (`daemon`, `echo on backend 2`), killed, and stopped when the
//! lab goes. A process's index in start order names its files (`log-3`, `ready-3`), so a
//! restarted daemon gets a fresh log.

use std::{
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{netns::Netns, LabError};

/// How long a process may take to write its ready file.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// Every process a lab started, in start order, named by what it is.
pub(crate) struct Children {
    /// Where the logs and ready files go.
    work_dir: PathBuf,
    list: Vec<(String, Child)>,
}

impl Children {
    /// No processes yet; their files will go to `work_dir`.
    pub(crate) fn new(work_dir: &Path) -> Self {
        Self {
            work_dir: work_dir.to_owned(),
            list: Vec::new(),
        }
    }

    /// Runs `exe args --ready-file <file>` in `ns`, logging to its own file, and waits (at
    /// most 30 s) until it writes the ready file. A process that exits first, or is too slow,
    /// is an error carrying its log.
    pub(crate) fn spawn(
        &mut self,
        what: &str,
        ns: &Netns,
        exe: &str,
        args: &[&str],
    ) -> Result<(), LabError> {
        let ready = self.work_dir.join(format!("ready-{}", self.list.len()));
        let log = self.log_path(self.list.len());
        let log_file = std::fs::File::create(&log).map_err(|source| LabError::Io {
            path: log.clone(),
            source,
        })?;
        let mut cmd = ns.command(exe);
        cmd.args(args)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(std::process::Stdio::null());
        cmd.stdout(log_file.try_clone().map_err(|source| LabError::Io {
            path: log.clone(),
            source,
        })?);
        cmd.stderr(log_file);
        let child = cmd.spawn().map_err(|source| LabError::Io {
            path: PathBuf::from(exe),
            source,
        })?;
        self.list.push((what.to_owned(), child));
        let deadline = Instant::now() + READY_WITHIN;
        while !ready.exists() {
            let exited = self
                .list
                .last_mut()
                .and_then(|(_, c)| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(LabError::NotReady {
                    what: what.to_owned(),
                    seconds: READY_WITHIN.as_secs(),
                    log: format!(":\n{log}"),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The log file of the process started `index`-th.
    pub(crate) fn log_path(&self, index: usize) -> PathBuf {
        self.work_dir.join(format!("log-{index}"))
    }

    /// The index and process id of the last process started for `what`.
    pub(crate) fn last(&self, what: &str) -> Option<(usize, Pid)> {
        let index = self.list.iter().rposition(|(w, _)| w == what)?;
        Some((index, Pid::from_raw(self.list[index].1.id() as i32)))
    }

    /// The log of the last process started for `what` so far.
    pub(crate) fn last_log(&self, what: &str) -> String {
        self.last(what)
            .and_then(|(i, _)| std::fs::read_to_string(self.log_path(i)).ok())
            .unwrap_or_default()
    }

    /// The logs of every process started for `what`, joined.
    pub(crate) fn logs(&self, what: &str) -> String {
        self.list
            .iter()
            .enumerate()
            .filter(|(_, (w, _))| w == what)
            .filter_map(|(i, _)| std::fs::read_to_string(self.log_path(i)).ok())
            .collect()
    }

    /// Sends SIGKILL to every process started for `what`, without reaping it (so `&self`).
    pub(crate) fn kill(&self, what: &str) {
        for (w, child) in &self.list {
            if w == what {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            }
        }
    }

    /// Kills every running process started for `what` and reaps it.
    pub(crate) fn kill_and_reap(&mut self, what: &str) {
        for (w, child) in &mut self.list {
            if w == what && child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Whether a process started for `what` is still running.
    pub(crate) fn running(&mut self, what: &str) -> bool {
        self.list
            .iter_mut()
            .any(|(w, child)| w == what && child.try_wait().ok().flatten().is_none())
    }

    /// Asks every process to stop (SIGTERM), gives each up to 3 s, then kills and reaps it.
    pub(crate) fn stop_all(&mut self) {
        for (_, child) in &mut self.list {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        for (_, child) in &mut self.list {
            let deadline = Instant::now() + Duration::from_secs(3);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
