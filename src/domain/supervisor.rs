//! How a supervisor session moves a sandbox's phase, for drivers that do not
//! own the Ready transition (docs/relay.md, "Phase coupling"). Each function
//! changes the sandbox in place and says whether it changed anything.

use crate::proto::openshell::v1::{Sandbox, SandboxCondition, SandboxPhase};

const CONNECTED: (&str, &str, &str) = ("True", "DependenciesReady", "Supervisor session connected");
const DISCONNECTED: (&str, &str, &str) =
    ("False", "DependenciesNotReady", "Supervisor session disconnected");

/// Replace the `Ready` condition (or append one); whether it changed.
fn upsert_ready(s: &mut Sandbox, (status, reason, message): (&str, &str, &str)) -> bool {
    let conditions = &mut s.status.get_or_insert_with(Default::default).conditions;
    let want = SandboxCondition {
        r#type: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: String::new(),
    };
    match conditions.iter_mut().find(|c| c.r#type == "Ready") {
        Some(c) if *c == want => false,
        Some(c) => {
            *c = want;
            true
        }
        None => {
            conditions.push(want);
            true
        }
    }
}

fn phase(s: &Sandbox) -> SandboxPhase {
    SandboxPhase::try_from(s.phase).unwrap_or(SandboxPhase::Unknown)
}

/// A supervisor session was accepted: READY with the "Supervisor session
/// connected" condition, unless the sandbox is DELETING or in ERROR.
pub fn connected(s: &mut Sandbox) -> bool {
    if matches!(phase(s), SandboxPhase::Deleting | SandboxPhase::Error) {
        return false;
    }
    let changed = upsert_ready(s, CONNECTED);
    let promoted = s.phase != SandboxPhase::Ready as i32;
    s.phase = SandboxPhase::Ready as i32;
    changed || promoted
}

/// The current session ended: a READY sandbox goes back to PROVISIONING
/// with the "Supervisor session disconnected" condition; any other phase
/// stays.
pub fn disconnected(s: &mut Sandbox) -> bool {
    if phase(s) != SandboxPhase::Ready {
        return false;
    }
    upsert_ready(s, DISCONNECTED);
    s.phase = SandboxPhase::Provisioning as i32;
    true
}

/// After a driver status update, while a session is registered: a phase
/// the driver left at PROVISIONING or UNKNOWN is READY.
pub fn keep_ready(s: &mut Sandbox) {
    if matches!(phase(s), SandboxPhase::Provisioning | SandboxPhase::Unknown) {
        connected(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(phase: SandboxPhase) -> Sandbox {
        Sandbox { phase: phase as i32, ..Default::default() }
    }

    fn ready_condition(s: &Sandbox) -> &SandboxCondition {
        s.status.as_ref().unwrap().conditions.iter().find(|c| c.r#type == "Ready").unwrap()
    }

    #[test]
    fn connect_promotes_and_upserts_the_condition() {
        let mut s = sandbox(SandboxPhase::Provisioning);
        s.status = Some(Default::default());
        s.status.as_mut().unwrap().conditions.push(SandboxCondition {
            r#type: "Ready".into(),
            status: "False".into(),
            reason: "Starting".into(),
            ..Default::default()
        });
        assert!(connected(&mut s));
        assert_eq!(s.phase, SandboxPhase::Ready as i32);
        let c = ready_condition(&s);
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "DependenciesReady"));
        assert_eq!(c.message, "Supervisor session connected");
        assert_eq!(s.status.as_ref().unwrap().conditions.len(), 1, "replaced, not appended");
        assert!(!connected(&mut s), "nothing changes the second time");
    }

    #[test]
    fn deleting_and_error_are_left_alone() {
        for p in [SandboxPhase::Deleting, SandboxPhase::Error] {
            let mut s = sandbox(p);
            assert!(!connected(&mut s));
            assert_eq!(s.phase, p as i32);
            assert!(s.status.is_none());
        }
    }

    #[test]
    fn disconnect_demotes_only_ready() {
        let mut s = sandbox(SandboxPhase::Ready);
        assert!(disconnected(&mut s));
        assert_eq!(s.phase, SandboxPhase::Provisioning as i32);
        assert_eq!(ready_condition(&s).message, "Supervisor session disconnected");
        let mut e = sandbox(SandboxPhase::Error);
        assert!(!disconnected(&mut e));
        assert_eq!(e.phase, SandboxPhase::Error as i32);
    }

    #[test]
    fn driver_updates_keep_a_connected_sandbox_ready() {
        for p in [SandboxPhase::Provisioning, SandboxPhase::Unknown] {
            let mut s = sandbox(p);
            keep_ready(&mut s);
            assert_eq!(s.phase, SandboxPhase::Ready as i32);
        }
        let mut e = sandbox(SandboxPhase::Error);
        keep_ready(&mut e);
        assert_eq!(e.phase, SandboxPhase::Error as i32);
    }
}
