//! The generated types match api.md's field numbers on the wire, and
//! fields declared as opaque bytes carry a client's message unchanged.

use prost::Message;
use slimgate::grpc::Shape;
use slimgate::proto::openshell::datamodel::v1::{ObjectMeta, Provider};
use slimgate::proto::openshell::sandbox::v1 as sb;
use slimgate::proto::openshell::v1 as os;

#[test]
fn health_response_fields_1_and_2() {
    let m = os::HealthResponse { status: os::ServiceStatus::Healthy as i32, version: "v".into() };
    // field 1 varint 1; field 2 length-delimited "v"
    assert_eq!(m.encode_to_vec(), [0x08, 0x01, 0x12, 0x01, b'v']);
}

#[test]
fn provider_metadata_and_credentials_map() {
    let mut p = Provider { r#type: "t".into(), ..Default::default() };
    p.metadata = Some(ObjectMeta { name: "n".into(), ..Default::default() });
    p.credentials.insert("k".into(), "v".into());
    let wire = p.encode_to_vec();
    // 1: metadata { 2: "n" }, 2: "t", 3: map entry { 1: "k", 2: "v" }
    assert_eq!(
        wire,
        [
            0x0a, 0x03, 0x12, 0x01, b'n', 0x12, 0x01, b't', 0x1a, 0x06, 0x0a, 0x01, b'k', 0x12,
            0x01, b'v'
        ]
    );
}

#[test]
fn policy_fields_are_opaque_and_keep_presence() {
    // SandboxSpec field 7, present but empty, must stay present.
    let spec = os::SandboxSpec { policy: Some(Default::default()), ..Default::default() };
    assert_eq!(spec.encode_to_vec(), [0x3a, 0x00]);
    let back = os::SandboxSpec::decode(&[0x3a, 0x00][..]).unwrap();
    assert_eq!(back.policy.as_deref(), Some(&[][..]));
    // UpdateConfigRequest field 2, SandboxPolicyRevision field 7,
    // GetSandboxConfigResponse field 1.
    let u = os::UpdateConfigRequest { policy: Some(vec![1, 2].into()), ..Default::default() };
    assert_eq!(u.encode_to_vec(), [0x12, 0x02, 1, 2]);
    let r = os::SandboxPolicyRevision { policy: Some(vec![9].into()), ..Default::default() };
    assert_eq!(r.encode_to_vec(), [0x3a, 0x01, 9]);
    let g = sb::GetSandboxConfigResponse { policy: Some(vec![7].into()), ..Default::default() };
    assert_eq!(g.encode_to_vec(), [0x0a, 0x01, 7]);
}

#[test]
fn a_full_policy_passes_through_byte_for_byte() {
    // A client with the upstream protos encodes a real SandboxPolicy, plus a
    // field number slimgate does not know (99).
    let policy = sb::SandboxPolicy {
        version: 3,
        filesystem: Some(sb::FilesystemPolicy {
            include_workdir: true,
            read_only: vec!["/usr".into()],
            read_write: vec!["/tmp".into()],
        }),
        process: Some(sb::ProcessPolicy {
            run_as_user: "sandbox".into(),
            run_as_group: "sandbox".into(),
        }),
        ..Default::default()
    };
    let mut bytes = policy.encode_to_vec();
    bytes.extend_from_slice(&[0x9a, 0x06, 0x03, b'x', b'y', b'z']); // field 99, "xyz"
    let spec = os::SandboxSpec { policy: Some(bytes.clone().into()), ..Default::default() };
    let wire = spec.encode_to_vec();
    let back = os::SandboxSpec::decode(wire.as_slice()).unwrap();
    assert_eq!(back.policy.as_deref(), Some(bytes.as_slice()));
    // And the upstream shape decodes the same bytes as a message field.
    let as_message = sb::SandboxPolicy::decode(back.policy.unwrap()).unwrap();
    assert_eq!(as_message.version, 3);
}

#[test]
fn method_tables_match_the_protos() {
    use slimgate::proto::openshell::v1::open_shell;
    let paths: Vec<&str> = open_shell::METHODS.iter().map(|m| m.path).collect();
    assert_eq!(paths.len(), 39);
    assert!(paths.contains(&"/openshell.v1.OpenShell/SubmitPolicyAnalysis"));
    assert_eq!(open_shell::CONNECT_SUPERVISOR.shape, Shape::BidiStreaming);
    assert_eq!(open_shell::RELAY_STREAM.shape, Shape::BidiStreaming);
    assert_eq!(open_shell::EXEC_SANDBOX.shape, Shape::ServerStreaming);
    assert!(paths.contains(&"/openshell.v1.OpenShell/GetSandboxProviderEnvironment"));
    assert_eq!(open_shell::WATCH_SANDBOX.shape, Shape::ServerStreaming);
    assert_eq!(open_shell::PUSH_SANDBOX_LOGS.shape, Shape::ClientStreaming);
    assert_eq!(open_shell::HEALTH.path, "/openshell.v1.OpenShell/Health");
    let cfg = open_shell::METHODS.iter().find(|m| m.path.ends_with("/GetSandboxConfig")).unwrap();
    assert_eq!(cfg.request_type, "openshell.sandbox.v1.GetSandboxConfigRequest");
    use slimgate::proto::openshell::compute::v1::compute_driver;
    assert_eq!(compute_driver::WATCH_SANDBOXES.shape, Shape::ServerStreaming);
    assert_eq!(compute_driver::METHODS.len(), 8);
}

#[test]
fn data_path_field_numbers() {
    use slimgate::proto::openshell::v1::{gateway_message, relay_frame};
    // RelayFrame.init = 1 (RelayInit.channel_id = 1), RelayFrame.data = 2.
    let init = os::RelayFrame {
        payload: Some(relay_frame::Payload::Init(os::RelayInit { channel_id: "c".into() })),
    };
    assert_eq!(init.encode_to_vec(), [0x0a, 0x03, 0x0a, 0x01, b'c']);
    let data = os::RelayFrame { payload: Some(relay_frame::Payload::Data(vec![7].into())) };
    assert_eq!(data.encode_to_vec(), [0x12, 0x01, 7]);
    // GatewayMessage.session_accepted = 1 {session_id = 1, heartbeat_interval_secs = 2};
    // relay_open = 4.
    let accepted = os::GatewayMessage {
        payload: Some(gateway_message::Payload::SessionAccepted(os::SessionAccepted {
            session_id: "s".into(),
            heartbeat_interval_secs: 15,
        })),
    };
    assert_eq!(accepted.encode_to_vec(), [0x0a, 0x05, 0x0a, 0x01, b's', 0x10, 15]);
    let open = os::GatewayMessage {
        payload: Some(gateway_message::Payload::RelayOpen(os::RelayOpen {
            channel_id: "c".into(),
        })),
    };
    assert_eq!(open.encode_to_vec(), [0x22, 0x03, 0x0a, 0x01, b'c']);
    // CreateSshSessionResponse.gateway_port = 4, expires_at_ms = 8.
    let resp =
        os::CreateSshSessionResponse { gateway_port: 8080, expires_at_ms: 1, ..Default::default() };
    assert_eq!(resp.encode_to_vec(), [0x20, 0x90, 0x3f, 0x40, 0x01]);
}

#[test]
fn provider_profile_field_numbers() {
    use slimgate::proto::openshell::sandbox::v1::{NetworkBinary, NetworkEndpoint};
    // ProviderProfile: category = 4, endpoints = 6, binaries = 7, inference_capable = 8.
    let p = os::ProviderProfile {
        category: os::ProviderProfileCategory::SourceControl as i32,
        endpoints: vec![NetworkEndpoint::default()],
        binaries: vec![NetworkBinary::default()],
        inference_capable: true,
        ..Default::default()
    };
    assert_eq!(p.encode_to_vec(), [0x20, 4, 0x32, 0, 0x3a, 0, 0x40, 1]);
    let c = os::ProviderProfileCredential { query_param: "q".into(), ..Default::default() };
    assert_eq!(c.encode_to_vec(), [0x3a, 1, b'q']);
    let d = os::ProviderProfileDiagnostic { severity: "e".into(), ..Default::default() };
    assert_eq!(d.encode_to_vec(), [0x2a, 1, b'e']);
    let i = os::ProviderProfileImportItem { profile: Some(vec![].into()), source: "s".into() };
    assert_eq!(i.encode_to_vec(), [0x0a, 0, 0x12, 1, b's']);
    // A present-but-empty profile stays present in storage.
    let s = os::StoredProviderProfile { metadata: None, profile: Some(vec![].into()) };
    assert_eq!(s.encode_to_vec(), [0x12, 0]);
    let r = os::ImportProviderProfilesResponse {
        diagnostics: vec![],
        profiles: vec![vec![].into()],
        imported: true,
    };
    assert_eq!(r.encode_to_vec(), [0x12, 0, 0x18, 1]);
    let l = os::LintProviderProfilesResponse { diagnostics: vec![], valid: true };
    assert_eq!(l.encode_to_vec(), [0x10, 1]);
    let q = os::ListProviderProfilesRequest { limit: 1, offset: 2 };
    assert_eq!(q.encode_to_vec(), [0x08, 1, 0x10, 2]);
    assert_eq!(os::DeleteProviderProfileResponse { deleted: true }.encode_to_vec(), [0x08, 1]);
    assert_eq!(os::ProviderProfileCategory::Knowledge as i32, 7);
}

#[test]
fn draft_policy_field_numbers() {
    // PolicyChunk: rule_name = 3, proposed_rule = 4 (bytes of a rule),
    // confidence = 7 (float), hit_count = 13, binary = 16.
    let c = os::PolicyChunk {
        rule_name: "r".into(),
        proposed_rule: Some(vec![].into()),
        confidence: 1.0,
        hit_count: 2,
        binary: "b".into(),
        ..Default::default()
    };
    let mut want = vec![0x1a, 1, b'r', 0x22, 0, 0x3d];
    want.extend_from_slice(&1.0f32.to_le_bytes());
    want.extend_from_slice(&[0x68, 2, 0x82, 0x01, 1, b'b']);
    assert_eq!(c.encode_to_vec(), want);
    // SubmitPolicyAnalysisRequest.name = 4; DenialSummary.l7_inspection_active = 17.
    let r = os::SubmitPolicyAnalysisRequest { name: "n".into(), ..Default::default() };
    assert_eq!(r.encode_to_vec(), [0x22, 1, b'n']);
    let d = os::DenialSummary { l7_inspection_active: true, ..Default::default() };
    assert_eq!(d.encode_to_vec(), [0x88, 0x01, 1]);
    let a = os::ApproveAllDraftChunksResponse { chunks_skipped: 1, ..Default::default() };
    assert_eq!(a.encode_to_vec(), [0x20, 1]);
    let g = os::GetDraftPolicyResponse { last_analyzed_at_ms: 1, ..Default::default() };
    assert_eq!(g.encode_to_vec(), [0x20, 1]);
    let e = os::EditDraftChunkRequest { proposed_rule: Some(vec![].into()), ..Default::default() };
    assert_eq!(e.encode_to_vec(), [0x1a, 0]);
    let h = os::DraftHistoryEntry { chunk_id: "c".into(), ..Default::default() };
    assert_eq!(h.encode_to_vec(), [0x22, 1, b'c']);
}
