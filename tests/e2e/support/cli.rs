//! Running the `shardline` CLI in a lab's load-balancer namespace, as an operator would.

use std::process::Output;

use serde_json::Value;
use shardline_lab::Lab;

/// Runs `shardline ARGS` in the load balancer's namespace, with the token or without.
pub fn cli(lab: &Lab, token: bool, args: &[&str]) -> (i32, String, String) {
    let mut cmd = lab.topology.lb.command(&crate::support::shardline_bin());
    cmd.args(args)
        .env_remove("SHARDLINE_API_TOKEN")
        .env_remove("SHARDLINE_API");
    if token {
        cmd.env("SHARDLINE_API_TOKEN_FILE", &lab.api_token);
    } else {
        cmd.env_remove("SHARDLINE_API_TOKEN_FILE");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("running shardline");
    let (out, err) = (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    );
    (status.code().unwrap_or(-1), out, err)
}

/// Runs the command and asserts its exit code; returns stdout.
pub fn ok(lab: &Lab, args: &[&str]) -> String {
    expect(lab, true, args, 0)
}

/// Runs the command and asserts exit code `code`; returns stdout on success, else stderr.
pub fn expect(lab: &Lab, token: bool, args: &[&str], code: i32) -> String {
    let (got, out, err) = cli(lab, token, args);
    assert_eq!(
        got,
        code,
        "shardline {}: exit {got}, want {code}\nstdout:\n{out}\nstderr:\n{err}",
        args.join(" ")
    );
    if code == 0 {
        out
    } else {
        err
    }
}

/// Runs the command with `--json` (and the token), asserts success and parses stdout.
pub fn json(lab: &Lab, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = ok(lab, &all);
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("shardline {}: not JSON ({e}):\n{out}", all.join(" ")))
}
