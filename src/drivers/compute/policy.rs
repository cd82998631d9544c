//! What CreateSandbox does to a policy, at the byte level.
//!
//! A sandbox's `spec.policy` is stored as the exact bytes the client sent
//! (api.md "How slimgate treats policies"): slimgate decodes a *view* to
//! look at it and never stores what it decoded. The one change CreateSandbox
//! makes, as upstream, is the process identity: a policy without a
//! `process` message (SandboxPolicy field 4) gets one with `run_as_user` and
//! `run_as_group` set to `sandbox`, appended to the client's bytes as an
//! encoded field 4. A policy that has field 4 is left exactly as sent.

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::grpc::Status;
use crate::proto::openshell::sandbox::v1::ProcessPolicy;

/// The identity a sandbox's processes run as when the policy names none.
pub const DEFAULT_PROCESS_IDENTITY: &str = "sandbox";

/// `SandboxPolicy` seen only as "is `process` (field 4) present". Decoding it
/// also checks that the policy is well-formed protobuf at the top level;
/// every other field is skipped unread.
#[derive(Clone, PartialEq, Message)]
struct ProcessView {
    #[prost(bytes = "bytes", optional, tag = "4")]
    process: Option<Bytes>,
}

/// The bytes to append: field 4 holding the default `ProcessPolicy`.
#[derive(Clone, PartialEq, Message)]
struct ProcessField {
    #[prost(message, optional, tag = "4")]
    process: Option<ProcessPolicy>,
}

/// The policy to store: the client's bytes, plus a default process message
/// when the policy has none.
pub fn with_default_process(policy: Bytes) -> Result<Bytes, Status> {
    let view = ProcessView::decode(policy.clone()).map_err(|e| {
        Status::invalid_argument(format!("policy is not a valid SandboxPolicy: {e}"))
    })?;
    if view.process.is_some() {
        return Ok(policy);
    }
    let field = ProcessField {
        process: Some(ProcessPolicy {
            run_as_user: DEFAULT_PROCESS_IDENTITY.to_string(),
            run_as_group: DEFAULT_PROCESS_IDENTITY.to_string(),
        }),
    };
    let mut out = BytesMut::with_capacity(policy.len() + field.encoded_len());
    out.extend_from_slice(&policy);
    field
        .encode(&mut out)
        .map_err(|_| Status::internal("policy encoding failed"))?;
    Ok(out.freeze())
}

/// Policy safety validation (api.md "How slimgate treats policies": process
/// identity, filesystem paths, wildcard hosts) belongs to issue 9, which
/// fills this in on the decoded view. CreateSandbox calls it on the policy
/// it is about to store, after [`with_default_process`].
pub fn check_safety(_policy: &[u8]) -> Result<(), Status> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::openshell::sandbox::v1::{LandlockPolicy, SandboxPolicy};

    #[test]
    fn appends_process_when_absent_and_keeps_the_client_bytes() {
        // version 7, landlock {compatibility: "best_effort"}, and an unknown
        // field 99 that a decode-and-re-encode would lose.
        let mut sent = SandboxPolicy {
            version: 7,
            landlock: Some(LandlockPolicy {
                compatibility: "best_effort".into(),
            }),
            ..Default::default()
        }
        .encode_to_vec();
        sent.extend_from_slice(&[0x98, 0x06, 0x01]); // field 99, varint 1
        let stored = with_default_process(Bytes::from(sent.clone())).unwrap();
        assert!(stored.starts_with(&sent), "client bytes are a prefix");
        let decoded = SandboxPolicy::decode(stored.clone()).unwrap();
        let process = decoded.process.unwrap();
        assert_eq!(process.run_as_user, "sandbox");
        assert_eq!(process.run_as_group, "sandbox");
        assert_eq!(decoded.version, 7);
    }

    #[test]
    fn leaves_a_policy_with_process_alone() {
        let sent = SandboxPolicy {
            process: Some(ProcessPolicy::default()),
            ..Default::default()
        }
        .encode_to_vec();
        let stored = with_default_process(Bytes::from(sent.clone())).unwrap();
        assert_eq!(stored, sent);
    }

    #[test]
    fn empty_policy_gets_process_and_garbage_is_refused() {
        let stored = with_default_process(Bytes::new()).unwrap();
        assert_eq!(stored[0], 0x22);
        let err = with_default_process(Bytes::from_static(&[0xff])).unwrap_err();
        assert_eq!(err.code(), crate::grpc::Code::InvalidArgument);
    }
}
