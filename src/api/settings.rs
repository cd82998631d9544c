//! Settings: the registry of keys, how a scope's settings are stored, and
//! how they combine into what GetGatewayConfig and GetSandboxConfig show.
//!
//! Each scope's settings are one `Kind::Setting` record: `global` for the
//! gateway, `sandbox/<sandbox_id>` for a sandbox (removed with the
//! sandbox). The payload is [`Stored`]: the values and the scope's
//! `settings_revision`, which moves by one on every change, so a change and
//! its revision are one write, guarded by the record's store revision.
//!
//! The global scope also holds the reserved key `policy`: the global
//! policy's exact bytes, as a `bytes_value` (upstream keeps it hex-encoded
//! in the same place). It is never listed as a setting.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;

use crate::grpc::Status;
use crate::proto::openshell::sandbox::v1::{
    EffectiveSetting, SettingScope, SettingValue, setting_value::Value,
};
use crate::store::{Expect, Kind, NewRecord, Op, Store, StoreError};

/// The global scope's record name.
pub const GLOBAL: &str = "global";
/// The reserved key holding the global policy.
pub const POLICY_KEY: &str = "policy";

/// The type a registered setting holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    /// `bool_value`
    Bool,
}

impl ValueKind {
    fn as_str(self) -> &'static str {
        match self {
            ValueKind::Bool => "bool",
        }
    }

    fn accepts(self, value: &Value) -> bool {
        matches!((self, value), (ValueKind::Bool, Value::BoolValue(_)))
    }
}

/// Every setting a client may set, in the order messages list them.
/// The global `providers_v2_enabled` turns on profile composition in
/// GetSandboxConfig (`profiles.rs`).
pub const REGISTERED: &[(&str, ValueKind)] =
    &[("providers_v2_enabled", ValueKind::Bool), ("ocsf_json_enabled", ValueKind::Bool)];

/// A scope's settings as stored.
#[derive(Clone, PartialEq, Message)]
pub struct Stored {
    /// Values by key.
    #[prost(btree_map = "string, message", tag = "1")]
    pub values: BTreeMap<String, SettingValue>,
    /// The scope's `settings_revision`.
    #[prost(uint64, tag = "2")]
    pub revision: u64,
}

/// The kind of registered key `key`, or upstream's INVALID_ARGUMENT
/// "unknown setting key '<k>'. Allowed keys: …".
pub fn kind_of(key: &str) -> Result<ValueKind, Status> {
    REGISTERED.iter().find(|(k, _)| *k == key).map(|(_, kind)| *kind).ok_or_else(|| {
        let allowed: Vec<&str> = REGISTERED.iter().map(|(k, _)| *k).collect();
        Status::invalid_argument(format!(
            "unknown setting key '{key}'. Allowed keys: {}",
            allowed.join(", ")
        ))
    })
}

/// The value to store for `key`, checked against the key's type (messages
/// as upstream).
pub fn checked_value(key: &str, value: Option<&SettingValue>) -> Result<SettingValue, Status> {
    let value = value.ok_or_else(|| Status::invalid_argument("setting_value is required"))?;
    let kind = kind_of(key)?;
    let inner = value
        .value
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("setting_value.value is required"))?;
    if kind.accepts(inner) {
        return Ok(value.clone());
    }
    let kind = kind.as_str();
    Err(Status::invalid_argument(match inner {
        Value::BytesValue(_) => {
            format!("setting '{key}' expects {kind} value; bytes are not supported for this key")
        }
        _ => format!("setting '{key}' expects {kind} value"),
    }))
}

/// A scope's settings and the store revision of their record (`None`: no
/// record yet).
pub fn read(store: &dyn Store, name: &str) -> Result<(Stored, Option<u64>), StoreError> {
    match store.get(Kind::Setting, name)? {
        None => Ok((Stored::default(), None)),
        Some(r) => Stored::decode(r.payload.clone())
            .map(|s| (s, Some(r.revision)))
            .map_err(|e| StoreError::Corrupt(format!("settings '{name}': {e}"))),
    }
}

/// The write of `stored` to record `name`, valid only if the record is
/// still at `read_revision` (as [`read`] returned it).
pub fn write_op(name: &str, stored: &Stored, read_revision: Option<u64>) -> Result<Op, StoreError> {
    Ok(Op::Put {
        kind: Kind::Setting,
        record: NewRecord {
            id: crate::store::new_uuid_v4()?,
            name: name.to_string(),
            labels: BTreeMap::new(),
            payload: Bytes::from(stored.encode_to_vec()),
        },
        expect: read_revision.map_or(Expect::Absent, Expect::Revision),
    })
}

/// Set `key` to `value`; whether that changed anything (the revision then
/// moves).
pub fn upsert(stored: &mut Stored, key: &str, value: SettingValue) -> bool {
    if stored.values.get(key) == Some(&value) {
        return false;
    }
    stored.values.insert(key.to_string(), value);
    stored.revision = stored.revision.wrapping_add(1);
    true
}

/// Remove `key`; whether it was there (the revision then moves).
pub fn remove(stored: &mut Stored, key: &str) -> bool {
    let removed = stored.values.remove(key).is_some();
    if removed {
        stored.revision = stored.revision.wrapping_add(1);
    }
    removed
}

/// The global policy's bytes, when one is set.
pub fn global_policy(global: &Stored) -> Option<Bytes> {
    match global.values.get(POLICY_KEY)?.value.as_ref()? {
        Value::BytesValue(b) => Some(b.clone()),
        _ => None,
    }
}

/// Whether `key` is a registered setting a client sees.
fn listed(key: &str) -> bool {
    key != POLICY_KEY && REGISTERED.iter().any(|(k, _)| *k == key)
}

/// GetGatewayConfig's map: every registered key (unset: no value), then the
/// global values.
pub fn gateway_view(global: &Stored) -> BTreeMap<String, SettingValue> {
    let mut out: BTreeMap<String, SettingValue> =
        REGISTERED.iter().map(|(k, _)| ((*k).to_string(), SettingValue { value: None })).collect();
    for (k, v) in &global.values {
        if listed(k) {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// GetSandboxConfig's map: every registered key (scope unspecified, no
/// value), overlaid by the sandbox's values, overlaid by the global ones.
pub fn effective(global: &Stored, sandbox: &Stored) -> BTreeMap<String, EffectiveSetting> {
    let mut out: BTreeMap<String, EffectiveSetting> = REGISTERED
        .iter()
        .map(|(k, _)| {
            let unset = EffectiveSetting { value: None, scope: SettingScope::Unspecified as i32 };
            ((*k).to_string(), unset)
        })
        .collect();
    for (scope, stored) in [(SettingScope::Sandbox, sandbox), (SettingScope::Global, global)] {
        for (k, v) in &stored.values {
            if listed(k) {
                let setting = EffectiveSetting { value: Some(v.clone()), scope: scope as i32 };
                out.insert(k.clone(), setting);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bool_value(b: bool) -> SettingValue {
        SettingValue { value: Some(Value::BoolValue(b)) }
    }

    #[test]
    fn type_checks_use_upstream_messages() {
        assert!(checked_value("ocsf_json_enabled", Some(&bool_value(true))).is_ok());
        let s = SettingValue { value: Some(Value::StringValue("yes".into())) };
        assert_eq!(
            checked_value("ocsf_json_enabled", Some(&s)).unwrap_err().message(),
            "setting 'ocsf_json_enabled' expects bool value"
        );
        let b = SettingValue { value: Some(Value::BytesValue(Bytes::from_static(b"1"))) };
        assert_eq!(
            checked_value("providers_v2_enabled", Some(&b)).unwrap_err().message(),
            "setting 'providers_v2_enabled' expects bool value; bytes are not supported for this key"
        );
        assert_eq!(
            checked_value("nope", Some(&bool_value(true))).unwrap_err().message(),
            "unknown setting key 'nope'. Allowed keys: providers_v2_enabled, ocsf_json_enabled"
        );
        assert_eq!(
            checked_value("ocsf_json_enabled", Some(&SettingValue { value: None }))
                .unwrap_err()
                .message(),
            "setting_value.value is required"
        );
        assert_eq!(
            checked_value("ocsf_json_enabled", None).unwrap_err().message(),
            "setting_value is required"
        );
    }

    #[test]
    fn views_overlay_scopes_and_hide_the_policy() {
        let mut global = Stored::default();
        let mut sandbox = Stored::default();
        assert!(upsert(&mut sandbox, "ocsf_json_enabled", bool_value(true)));
        assert!(!upsert(&mut sandbox, "ocsf_json_enabled", bool_value(true)));
        assert_eq!(sandbox.revision, 1);
        let policy =
            SettingValue { value: Some(Value::BytesValue(Bytes::from_static(b"\x08\x01"))) };
        upsert(&mut global, POLICY_KEY, policy);
        upsert(&mut global, "providers_v2_enabled", bool_value(false));
        let view = gateway_view(&global);
        assert_eq!(view.len(), 2);
        assert_eq!(view["ocsf_json_enabled"].value, None);
        let eff = effective(&global, &sandbox);
        assert_eq!(eff.len(), 2);
        assert_eq!(eff["ocsf_json_enabled"].scope, SettingScope::Sandbox as i32);
        assert_eq!(eff["providers_v2_enabled"].scope, SettingScope::Global as i32);
        assert_eq!(global_policy(&global).unwrap(), Bytes::from_static(b"\x08\x01"));
        assert!(remove(&mut global, POLICY_KEY));
        assert!(!remove(&mut global, POLICY_KEY));
        assert_eq!(global.revision, 3);
    }
}
