//! ExecSandbox (docs/relay.md, "Exec"): the gateway asks the sandbox's
//! supervisor for a relay, as a CONNECT tunnel does, and is itself the SSH
//! client over it (`crate::ssh`): the command's stdout and stderr stream
//! back as events, then its exit code.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Call, store_status};
use crate::grpc::{Sink, Status};
use crate::proto::openshell::v1::{
    ExecSandboxEvent, ExecSandboxExit, ExecSandboxRequest, ExecSandboxStderr, ExecSandboxStdout,
    SandboxPhase, exec_sandbox_event::Payload,
};
use crate::relay::CLAIM_TIMEOUT;
use crate::ssh::{self, Event, ExecRequest, SshError};
use crate::store::Kind;

/// How long ExecSandbox waits for the sandbox's supervisor session
/// (upstream's 15 s).
pub const SESSION_WAIT: Duration = Duration::from_secs(15);
/// Most arguments in `command` (upstream's limit).
pub const MAX_ARGS: usize = 1024;
/// Longest argument or environment value (upstream's limit).
pub const MAX_ARG_BYTES: usize = 32 * 1024;
/// Longest `workdir` (upstream's limit).
pub const MAX_WORKDIR_BYTES: usize = 4096;
/// Exit code reported when `timeout_seconds` passes (as `timeout(1)`).
pub const TIMEOUT_EXIT_CODE: i32 = 124;
/// Output events queued between the SSH client and the response stream;
/// beyond it the client grants the server no window.
const EVENT_QUEUE: usize = 16;

/// `value` as an argument, environment value or workdir: at most `max`
/// bytes, no NUL, CR or LF; `label` names it in the message.
fn check_value(label: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.len() > max {
        return Err(Status::invalid_argument(format!("{label} exceeds {max} byte limit")));
    }
    if value.contains('\0') {
        return Err(Status::invalid_argument(format!("{label} contains null bytes")));
    }
    if value.contains(['\r', '\n']) {
        return Err(Status::invalid_argument(format!(
            "{label} contains newline or carriage return characters"
        )));
    }
    Ok(())
}

fn env_key_ok(k: &str) -> bool {
    let mut b = k.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Steps 1–4 of the checks, in upstream's order; the environment in key
/// order.
fn validate(req: &ExecSandboxRequest) -> Result<BTreeMap<String, String>, Status> {
    if req.sandbox_id.is_empty() {
        return Err(Status::invalid_argument("sandbox_id is required"));
    }
    if req.command.is_empty() {
        return Err(Status::invalid_argument("command is required"));
    }
    let env: BTreeMap<String, String> = req.environment.clone().into_iter().collect();
    if !env.keys().all(|k| env_key_ok(k)) {
        return Err(Status::invalid_argument(
            "environment keys must match ^[A-Za-z_][A-Za-z0-9_]*$",
        ));
    }
    if req.command.len() > MAX_ARGS {
        return Err(Status::invalid_argument(format!(
            "command array exceeds {MAX_ARGS} argument limit"
        )));
    }
    for (i, a) in req.command.iter().enumerate() {
        check_value(&format!("command argument {i}"), a, MAX_ARG_BYTES)?;
    }
    for (k, v) in &env {
        check_value(&format!("environment value for '{k}'"), v, MAX_ARG_BYTES)?;
    }
    check_value("workdir", &req.workdir, MAX_WORKDIR_BYTES)?;
    Ok(env)
}

fn event(payload: Payload) -> ExecSandboxEvent {
    ExecSandboxEvent { payload: Some(payload) }
}

pub(super) async fn exec(
    Call { state, req, .. }: Call<ExecSandboxRequest>,
    sink: Sink<ExecSandboxEvent>,
) -> Result<(), Status> {
    let env = validate(&req)?;
    let record = state
        .store
        .get_by_id(Kind::Sandbox, &req.sandbox_id)
        .map_err(|e| {
            Status::internal(format!("fetch sandbox failed: {}", store_status(e).message()))
        })?
        .ok_or_else(|| Status::not_found("sandbox not found"))?;
    let sandbox = crate::domain::record::decode(&record).map_err(store_status)?;
    if sandbox.phase != SandboxPhase::Ready as i32 {
        return Err(Status::failed_precondition("sandbox is not ready"));
    }
    let opening = state.relays.open(&req.sandbox_id, SESSION_WAIT).await.map_err(|e| {
        Status::unavailable(format!(
            "supervisor relay failed: {}: {}",
            e.code().name(),
            e.message()
        ))
    })?;
    // After the relay was asked for, as upstream: an unusable command
    // leaves the pending relay to expire.
    let workdir = Some(req.workdir.as_str()).filter(|w| !w.is_empty());
    let command = ssh::build_command(&req.command, &env, workdir)
        .map_err(|e| Status::invalid_argument(format!("command construction failed: {e}")))?;
    let pipe = match tokio::time::timeout(CLAIM_TIMEOUT, opening.pipe).await {
        Ok(Ok(pipe)) => pipe,
        Ok(Err(_)) => return Err(Status::unavailable("relay channel dropped")),
        Err(_) => return Err(Status::deadline_exceeded("relay open timed out")),
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel(EVENT_QUEUE);
    let request = ExecRequest { command, tty: req.tty, stdin: req.stdin.to_vec() };
    let run = ssh::exec(pipe, request, tx);
    let forward = async {
        while let Some(e) = rx.recv().await {
            let payload = match e {
                Event::Stdout(data) => Payload::Stdout(ExecSandboxStdout { data }),
                Event::Stderr(data) => Payload::Stderr(ExecSandboxStderr { data }),
            };
            sink.send(&event(payload)).await?;
        }
        Ok::<(), Status>(())
    };
    // Every event is forwarded before the exit (the client's sender goes
    // when `run` ends, which ends `forward`).
    let both = async {
        let (ran, forwarded) = crate::net::io::both(run, forward).await;
        forwarded?;
        ran.map_err(|e| match e {
            SshError::AuthRejected => Status::permission_denied(e.to_string()),
            e => Status::internal(e.to_string()),
        })
    };
    let code = if req.timeout_seconds > 0 {
        let limit = Duration::from_secs(u64::from(req.timeout_seconds));
        match tokio::time::timeout(limit, both).await {
            Ok(r) => r?.code(),
            // The SSH connection is dropped with `both`.
            Err(_) => TIMEOUT_EXIT_CODE,
        }
    } else {
        both.await?.code()
    };
    sink.send(&event(Payload::Exit(ExecSandboxExit { exit_code: code }))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(command: &[&str]) -> ExecSandboxRequest {
        ExecSandboxRequest {
            sandbox_id: "sb".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn refused(r: &ExecSandboxRequest) -> String {
        validate(r).unwrap_err().message().to_string()
    }

    #[test]
    fn checks_in_upstreams_order_with_its_messages() {
        let mut r = req(&[]);
        r.sandbox_id.clear();
        assert_eq!(refused(&r), "sandbox_id is required");
        assert_eq!(refused(&req(&[])), "command is required");
        let mut r = req(&["a\nb"]);
        r.environment.insert("1BAD".into(), "v".into());
        assert_eq!(refused(&r), "environment keys must match ^[A-Za-z_][A-Za-z0-9_]*$");
        let many: Vec<&str> = vec!["x"; MAX_ARGS + 1];
        assert_eq!(refused(&req(&many)), "command array exceeds 1024 argument limit");
        let long = "x".repeat(MAX_ARG_BYTES + 1);
        assert_eq!(refused(&req(&["ok", &long])), "command argument 1 exceeds 32768 byte limit");
        assert_eq!(refused(&req(&["a\0"])), "command argument 0 contains null bytes");
        assert_eq!(
            refused(&req(&["a\rb"])),
            "command argument 0 contains newline or carriage return characters"
        );
        let mut r = req(&["true"]);
        r.environment.insert("_OK".into(), "a\nb".into());
        assert_eq!(
            refused(&r),
            "environment value for '_OK' contains newline or carriage return characters"
        );
        let mut r = req(&["true"]);
        r.workdir = "/".repeat(MAX_WORKDIR_BYTES + 1);
        assert_eq!(refused(&r), "workdir exceeds 4096 byte limit");
        r.workdir = "/tmp\0".into();
        assert_eq!(refused(&r), "workdir contains null bytes");
        let mut r = req(&["echo", "hi"]);
        r.environment.insert("B".into(), "2".into());
        r.environment.insert("A".into(), "1".into());
        assert_eq!(validate(&r).unwrap().keys().collect::<Vec<_>>(), ["A", "B"]);
    }
}
