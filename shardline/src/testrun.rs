//! Running frames through a loaded XDP program with `BPF_PROG_TEST_RUN`: the kernel's verdict
//! and output bytes for one packet, without attaching anything.

use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use shardline_common::verdict::Action;

/// The kernel's answer for one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelRun {
    /// The XDP action returned.
    pub action: Action,
    /// The frame as the program left it.
    pub output: Vec<u8>,
}

/// Runs `frame` once through `program`.
pub fn run_once(program: &Xdp, frame: &[u8]) -> Result<KernelRun, ProgramError> {
    // Room for the largest growth the program makes (an IPv6 outer header).
    let mut out = vec![0u8; frame.len() + 256];
    let result = program.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ..TestRunOptions::new()
    })?;
    out.truncate(result.data_size_out as usize);
    Ok(KernelRun {
        action: Action::from_code(result.return_value),
        output: out,
    })
}
