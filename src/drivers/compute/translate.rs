//! Public sandbox ↔ driver sandbox, exactly as upstream translates them
//! (existing drivers expect this shape), and the phase rule. A driver never
//! sees `policy` or `providers`; template fields it has no slot for go into
//! `platform_config` (`resources_raw`: the resource keys left over). A
//! driver's `instance_id` is shown as `agent_pod`.

use std::collections::BTreeMap;

use crate::proto::google::protobuf::{Struct, Value, value::Kind};
use crate::proto::openshell::compute::v1::{
    DriverCondition, DriverResourceRequirements, DriverSandbox, DriverSandboxSpec,
    DriverSandboxStatus, DriverSandboxTemplate,
};
use crate::proto::openshell::v1::{
    Sandbox, SandboxCondition, SandboxPhase, SandboxSpec, SandboxStatus, SandboxTemplate,
};

/// `Ready=False` reasons that mean "still starting", not failure
/// (compared without regard to case).
pub const TRANSIENT_REASONS: &[&str] = &[
    "ReconcilerError",
    "DependenciesNotReady",
    "Starting",
    "ContainerStarting",
    "HealthcheckStarting",
    "InspectFailed",
];

/// The phase a driver status means (drivers.md "Phase from driver status").
pub fn phase(status: Option<&DriverSandboxStatus>) -> SandboxPhase {
    let Some(status) = status else {
        return SandboxPhase::Unknown;
    };
    if status.deleting {
        return SandboxPhase::Deleting;
    }
    let Some(ready) = status.conditions.iter().find(|c| c.r#type.eq_ignore_ascii_case("Ready"))
    else {
        return SandboxPhase::Provisioning;
    };
    if ready.status.eq_ignore_ascii_case("True") {
        SandboxPhase::Ready
    } else if ready.status.eq_ignore_ascii_case("False")
        && !TRANSIENT_REASONS.iter().any(|r| r.eq_ignore_ascii_case(&ready.reason))
    {
        SandboxPhase::Error
    } else {
        SandboxPhase::Provisioning
    }
}

pub fn to_driver(sandbox: &Sandbox) -> DriverSandbox {
    let meta = sandbox.metadata.clone().unwrap_or_default();
    let phase = SandboxPhase::try_from(sandbox.phase).unwrap_or(SandboxPhase::Unknown);
    DriverSandbox {
        id: meta.id,
        name: meta.name,
        // The driver fills in its own namespace.
        namespace: String::new(),
        spec: sandbox.spec.as_ref().map(driver_spec),
        status: sandbox.status.as_ref().map(|s| driver_status(s, phase == SandboxPhase::Deleting)),
    }
}

fn driver_spec(spec: &SandboxSpec) -> DriverSandboxSpec {
    // `policy` and `providers` are deliberately not carried over.
    DriverSandboxSpec {
        log_level: spec.log_level.clone(),
        environment: spec.environment.clone(),
        template: spec.template.as_ref().map(driver_template),
        gpu: spec.gpu,
        gpu_device: spec.gpu_device.clone(),
    }
}

fn driver_template(t: &SandboxTemplate) -> DriverSandboxTemplate {
    let (resources, leftover) = split_resources(t.resources.as_ref());
    let mut platform = BTreeMap::new();
    let mut put = |key: &str, value: Kind| platform.insert(key.to_string(), kind(value));
    if !t.runtime_class_name.is_empty() {
        put("runtime_class_name", Kind::StringValue(t.runtime_class_name.clone()));
    }
    if !t.annotations.is_empty() {
        let fields = t
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), kind(Kind::StringValue(v.clone()))))
            .collect();
        put("annotations", Kind::StructValue(Struct { fields }));
    }
    if let Some(v) = &t.volume_claim_templates {
        put("volume_claim_templates", Kind::StructValue(v.clone()));
    }
    if let Some(raw) = leftover {
        put("resources_raw", Kind::StructValue(raw));
    }
    DriverSandboxTemplate {
        image: t.image.clone(),
        agent_socket_path: t.agent_socket.clone(),
        labels: t.labels.clone(),
        environment: t.environment.clone(),
        resources,
        platform_config: (!platform.is_empty()).then_some(Struct { fields: platform }),
    }
}

fn kind(k: Kind) -> Value {
    Value { kind: Some(k) }
}

/// Take the `requests`/`limits` `cpu`/`memory` string values out of a
/// Kubernetes-style resources Struct. Returns them (absent when all are
/// empty) and what is left of the Struct (absent when nothing is).
fn split_resources(
    resources: Option<&Struct>,
) -> (Option<DriverResourceRequirements>, Option<Struct>) {
    let Some(resources) = resources else {
        return (None, None);
    };
    let mut left = resources.clone();
    let mut take = |section: &str, key: &str| -> String {
        let Some(Value { kind: Some(Kind::StructValue(inner)) }) = left.fields.get_mut(section)
        else {
            return String::new();
        };
        let value = match inner.fields.get(key) {
            Some(Value { kind: Some(Kind::StringValue(s)) }) => s.clone(),
            _ => return String::new(),
        };
        inner.fields.remove(key);
        if inner.fields.is_empty() {
            left.fields.remove(section);
        }
        value
    };
    let typed = DriverResourceRequirements {
        cpu_request: take("requests", "cpu"),
        cpu_limit: take("limits", "cpu"),
        memory_request: take("requests", "memory"),
        memory_limit: take("limits", "memory"),
    };
    let any = !(typed.cpu_request.is_empty()
        && typed.cpu_limit.is_empty()
        && typed.memory_request.is_empty()
        && typed.memory_limit.is_empty());
    (any.then_some(typed), (!left.fields.is_empty()).then_some(left))
}

fn driver_status(s: &SandboxStatus, deleting: bool) -> DriverSandboxStatus {
    DriverSandboxStatus {
        sandbox_name: s.sandbox_name.clone(),
        instance_id: s.agent_pod.clone(),
        agent_fd: s.agent_fd.clone(),
        sandbox_fd: s.sandbox_fd.clone(),
        conditions: s
            .conditions
            .iter()
            .map(|c| DriverCondition {
                r#type: c.r#type.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
            .collect(),
        deleting,
    }
}

pub fn public_status(s: &DriverSandboxStatus) -> SandboxStatus {
    SandboxStatus {
        sandbox_name: s.sandbox_name.clone(),
        agent_pod: s.instance_id.clone(),
        agent_fd: s.agent_fd.clone(),
        sandbox_fd: s.sandbox_fd.clone(),
        conditions: s
            .conditions
            .iter()
            .map(|c| SandboxCondition {
                r#type: c.r#type.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: &str, reason: &str) -> DriverSandboxStatus {
        DriverSandboxStatus {
            conditions: vec![DriverCondition {
                r#type: "Ready".into(),
                status: status.into(),
                reason: reason.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn phases() {
        assert_eq!(phase(None), SandboxPhase::Unknown);
        let deleting = DriverSandboxStatus { deleting: true, ..ready("True", "") };
        assert_eq!(phase(Some(&deleting)), SandboxPhase::Deleting);
        assert_eq!(phase(Some(&ready("True", ""))), SandboxPhase::Ready);
        assert_eq!(phase(Some(&ready("False", "ImagePullBackOff"))), SandboxPhase::Error);
        assert_eq!(phase(Some(&ready("False", ""))), SandboxPhase::Error);
        for r in TRANSIENT_REASONS {
            let lower = r.to_ascii_lowercase();
            assert_eq!(phase(Some(&ready("False", &lower))), SandboxPhase::Provisioning);
        }
        assert_eq!(phase(Some(&ready("Unknown", ""))), SandboxPhase::Provisioning);
        let none = DriverSandboxStatus::default();
        assert_eq!(phase(Some(&none)), SandboxPhase::Provisioning);
    }

    fn s(v: &str) -> Value {
        kind(Kind::StringValue(v.into()))
    }

    fn st(fields: &[(&str, Value)]) -> Struct {
        Struct { fields: fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() }
    }

    #[test]
    fn resources_split_into_typed_and_leftover() {
        let r = st(&[
            ("requests", kind(Kind::StructValue(st(&[("cpu", s("1")), ("memory", s("1Gi"))])))),
            ("limits", kind(Kind::StructValue(st(&[("cpu", s("2")), ("nvidia.com/gpu", s("1"))])))),
        ]);
        let (typed, left) = split_resources(Some(&r));
        let typed = typed.unwrap();
        assert_eq!(typed.cpu_request, "1");
        assert_eq!(typed.memory_request, "1Gi");
        assert_eq!(typed.cpu_limit, "2");
        assert_eq!(typed.memory_limit, "");
        let left = left.unwrap();
        assert_eq!(
            left,
            st(&[("limits", kind(Kind::StructValue(st(&[("nvidia.com/gpu", s("1"))]))))])
        );
        assert_eq!(split_resources(Some(&st(&[]))), (None, None));
    }

    #[test]
    fn template_translation() {
        let mut t = SandboxTemplate {
            image: "img".into(),
            runtime_class_name: "kata".into(),
            agent_socket: "/run/a.sock".into(),
            ..Default::default()
        };
        t.annotations.insert("a".into(), "b".into());
        t.labels.insert("l".into(), "v".into());
        let d = driver_template(&t);
        assert_eq!(d.image, "img");
        assert_eq!(d.agent_socket_path, "/run/a.sock");
        assert_eq!(d.labels.get("l").map(String::as_str), Some("v"));
        assert_eq!(d.resources, None);
        let pc = d.platform_config.unwrap();
        assert_eq!(pc.fields.get("runtime_class_name"), Some(&s("kata")));
        assert_eq!(
            pc.fields.get("annotations"),
            Some(&kind(Kind::StructValue(st(&[("a", s("b"))]))))
        );
        assert!(!pc.fields.contains_key("resources_raw"));
        let bare = driver_template(&SandboxTemplate::default());
        assert_eq!(bare.platform_config, None);
    }

    #[test]
    fn policy_and_providers_never_reach_the_driver() {
        let spec = SandboxSpec {
            policy: Some(vec![1, 2, 3].into()),
            providers: vec!["p".into()],
            log_level: "debug".into(),
            ..Default::default()
        };
        let d = driver_spec(&spec);
        let wire = prost::Message::encode_to_vec(&d);
        // Only field 1 (log_level) is on the wire.
        assert_eq!(wire, [0x0a, 5, b'd', b'e', b'b', b'u', b'g']);
    }
}
