//! Provider profiles (profiles.md B.3): ListProviderProfiles,
//! GetProviderProfile, LintProviderProfiles, ImportProviderProfiles and
//! DeleteProviderProfile, and the store side of the `providers_v2_enabled`
//! composition GetSandboxConfig runs. The rules are `domain/profiles.rs`.
//!
//! A custom profile is a `StoredProviderProfile` under
//! (`Kind::ProviderProfile`, profile id) whose `profile` is the exact bytes
//! the client imported (with an unknown category as OTHER).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use prost::Message;

use super::settings::Stored;
use super::{State, page_limit, store_status};
use crate::domain::profiles::{self, SEVERITY_ERROR};
use crate::grpc::{Context, Router, Status};
use crate::proto::openshell::datamodel::v1::{ObjectMeta, Provider};
use crate::proto::openshell::sandbox::v1::setting_value::Value;
use crate::proto::openshell::v1::{
    DeleteProviderProfileRequest, DeleteProviderProfileResponse, GetProviderProfileRequest,
    ImportProviderProfilesRequest, ImportProviderProfilesResponse, LintProviderProfilesRequest,
    LintProviderProfilesResponse, ListProviderProfilesRequest, ListProviderProfilesResponse,
    ProviderProfileImportItem, ProviderProfileResponse, Sandbox, StoredProviderProfile, open_shell,
};
use crate::store::{Expect, Kind, ListQuery, MAX_LIST_RECORDS, NewRecord, Op, Store};

/// Most custom profiles: ListProviderProfiles reads at most this many (as
/// upstream), so Import refuses a batch that would store more, rather than
/// keep profiles no list shows.
pub const MAX_CUSTOM_PROFILES: usize = MAX_LIST_RECORDS;
/// The gateway-global setting that turns composition on.
pub const PROVIDERS_V2_KEY: &str = "providers_v2_enabled";

pub(super) fn register(router: &mut Router, state: &Arc<State>) {
    let s = Arc::clone(state);
    router.unary(
        open_shell::LIST_PROVIDER_PROFILES,
        move |_ctx: Context, req: ListProviderProfilesRequest| {
            let r = list(s.store.as_ref(), &req);
            async move { r }
        },
    );
    let s = Arc::clone(state);
    router.unary(
        open_shell::GET_PROVIDER_PROFILE,
        move |_ctx: Context, req: GetProviderProfileRequest| {
            let r = get(s.store.as_ref(), &req.id);
            async move { r }
        },
    );
    let s = Arc::clone(state);
    router.unary(
        open_shell::LINT_PROVIDER_PROFILES,
        move |_ctx: Context, req: LintProviderProfilesRequest| {
            let r = check(s.store.as_ref(), req.profiles).map(|(diagnostics, _)| {
                let valid = !diagnostics.iter().any(|d| d.severity == SEVERITY_ERROR);
                LintProviderProfilesResponse { diagnostics, valid }
            });
            async move { r }
        },
    );
    let s = Arc::clone(state);
    router.unary(
        open_shell::IMPORT_PROVIDER_PROFILES,
        move |_ctx: Context, req: ImportProviderProfilesRequest| {
            let s = Arc::clone(&s);
            async move { import(&s, req.profiles).await }
        },
    );
    let s = Arc::clone(state);
    router.unary(
        open_shell::DELETE_PROVIDER_PROFILE,
        move |_ctx: Context, req: DeleteProviderProfileRequest| {
            let s = Arc::clone(&s);
            async move { delete(&s, &req.id).await }
        },
    );
}

/// The custom profile `id`'s bytes, if stored.
fn custom(store: &dyn Store, id: &str) -> Result<Option<Bytes>, Status> {
    let Some(record) = store.get(Kind::ProviderProfile, id).map_err(store_status)? else {
        return Ok(None);
    };
    let stored = StoredProviderProfile::decode(record.payload.clone())
        .map_err(|_| Status::internal("stored provider profile is corrupt"))?;
    Ok(Some(stored.profile.unwrap_or_default()))
}

/// Built-in first, then custom, by normalised id.
fn lookup(store: &dyn Store, id: &str) -> Result<Option<Bytes>, Status> {
    match profiles::builtin(id) {
        Some(b) => Ok(Some(b.bytes.clone())),
        None => custom(store, id),
    }
}

fn list(
    store: &dyn Store,
    req: &ListProviderProfilesRequest,
) -> Result<ListProviderProfilesResponse, Status> {
    let mut all: Vec<(String, Bytes)> =
        profiles::builtins().iter().map(|b| (b.profile.id.clone(), b.bytes.clone())).collect();
    let query = ListQuery { limit: MAX_CUSTOM_PROFILES, ..ListQuery::default() };
    for record in store.list(Kind::ProviderProfile, &query).map_err(store_status)? {
        let stored = StoredProviderProfile::decode(record.payload)
            .map_err(|_| Status::internal("stored provider profile is corrupt"))?;
        all.push((record.name, stored.profile.unwrap_or_default()));
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let profiles = all
        .into_iter()
        .skip(req.offset as usize)
        .take(page_limit(req.limit))
        .map(|(_, bytes)| bytes)
        .collect();
    Ok(ListProviderProfilesResponse { profiles })
}

fn get(store: &dyn Store, raw: &str) -> Result<ProviderProfileResponse, Status> {
    let id = profiles::requested_id(raw)?;
    let profile = lookup(store, &id)?.ok_or_else(not_found)?;
    Ok(ProviderProfileResponse { profile: Some(profile) })
}

fn not_found() -> Status {
    Status::not_found("provider profile not found")
}

type Checked = (Vec<crate::proto::openshell::v1::ProviderProfileDiagnostic>, Vec<profiles::Parsed>);

/// B.4's diagnostics, with the store's "already exists" check.
fn check(store: &dyn Store, items: Vec<ProviderProfileImportItem>) -> Result<Checked, Status> {
    profiles::diagnostics(items, |id| {
        Ok(store.get(Kind::ProviderProfile, id).map_err(store_status)?.is_some())
    })
}

async fn import(
    state: &State,
    items: Vec<ProviderProfileImportItem>,
) -> Result<ImportProviderProfilesResponse, Status> {
    let (diagnostics, parsed) = check(state.store.as_ref(), items)?;
    if !diagnostics.is_empty() {
        return Ok(ImportProviderProfilesResponse {
            diagnostics,
            profiles: vec![],
            imported: false,
        });
    }
    let stored = state.store.list(Kind::ProviderProfile, &ListQuery::default());
    if stored.map_err(store_status)?.len() + parsed.len() > MAX_CUSTOM_PROFILES {
        return Err(Status::failed_precondition(format!(
            "too many custom provider profiles (at most {MAX_CUSTOM_PROFILES})"
        )));
    }
    let mut ops = Vec::with_capacity(parsed.len());
    for p in &parsed {
        let id = crate::store::new_uuid_v4().map_err(store_status)?;
        let meta = ObjectMeta {
            id: id.clone(),
            name: p.profile.id.clone(),
            created_at_ms: crate::store::now_ms(),
            labels: BTreeMap::new(),
        };
        let payload =
            StoredProviderProfile { metadata: Some(meta), profile: Some(p.bytes.clone()) };
        let record = NewRecord {
            id,
            name: p.profile.id.clone(),
            labels: BTreeMap::new(),
            payload: Bytes::from(payload.encode_to_vec()),
        };
        ops.push(Op::Put { kind: Kind::ProviderProfile, record, expect: Expect::Absent });
    }
    state
        .write_raw(move |s| s.apply(ops))
        .await
        .map_err(|e| Status::internal(format!("persist provider profile failed: {e}")))?;
    let profiles = parsed.into_iter().map(|p| p.bytes).collect();
    Ok(ImportProviderProfilesResponse { diagnostics, profiles, imported: true })
}

async fn delete(state: &State, raw: &str) -> Result<DeleteProviderProfileResponse, Status> {
    let id = profiles::requested_id(raw)?;
    if profiles::builtin(&id).is_some() {
        return Err(Status::failed_precondition("built-in provider profiles cannot be deleted"));
    }
    let store = state.store.as_ref();
    if store.get(Kind::ProviderProfile, &id).map_err(store_status)?.is_none() {
        return Err(not_found());
    }
    let users = sandboxes_using(store, &id)?;
    if !users.is_empty() {
        let names = users.into_iter().collect::<Vec<_>>().join(", ");
        return Err(Status::failed_precondition(format!(
            "provider profile '{id}' is in use by sandboxes: {names}"
        )));
    }
    let deleted = state.write(move |s| s.delete(Kind::ProviderProfile, &id)).await?;
    Ok(DeleteProviderProfileResponse { deleted })
}

/// The names of the sandboxes with a provider whose type normalises to
/// `id`, paging through every sandbox.
fn sandboxes_using(store: &dyn Store, id: &str) -> Result<BTreeSet<String>, Status> {
    let mut types: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut users = BTreeSet::new();
    let mut offset = 0;
    loop {
        let query = ListQuery { offset, limit: MAX_LIST_RECORDS, ..ListQuery::default() };
        let page = store.list(Kind::Sandbox, &query).map_err(store_status)?;
        offset += page.len();
        for record in &page {
            let sandbox = crate::domain::record::decode(record).map_err(store_status)?;
            for name in sandbox.spec.iter().flat_map(|s| &s.providers) {
                if !types.contains_key(name) {
                    let ty = provider(store, name)?.map(|p| p.r#type);
                    types.insert(name.clone(), ty);
                }
                let ty = types[name].as_deref().and_then(profiles::normalize_id);
                if ty.as_deref() == Some(id) {
                    users.insert(record.name.clone());
                }
            }
        }
        if page.len() < MAX_LIST_RECORDS {
            return Ok(users);
        }
    }
}

/// The stored provider `name`, if any.
fn provider(store: &dyn Store, name: &str) -> Result<Option<Provider>, Status> {
    let record = store.get(Kind::Provider, name).map_err(store_status)?;
    record.map(|r| super::provider::from_record(&r)).transpose()
}

/// B.5: the policy GetSandboxConfig returns for a sandbox-sourced
/// `policy`, with one `_provider_<name>` rule per attached provider when
/// the global `providers_v2_enabled` is true.
pub(super) fn compose_for(
    store: &dyn Store,
    global: &Stored,
    sandbox: &Sandbox,
    policy: Bytes,
) -> Result<Bytes, Status> {
    let enabled = match global.values.get(PROVIDERS_V2_KEY).and_then(|v| v.value.as_ref()) {
        None => false,
        Some(Value::BoolValue(b)) => *b,
        Some(_) => {
            return Err(Status::internal(format!(
                "setting '{PROVIDERS_V2_KEY}' has invalid value type; expected bool"
            )));
        }
    };
    if !enabled {
        return Ok(policy);
    }
    let mut layers = Vec::new();
    for name in sandbox.spec.iter().flat_map(|s| &s.providers) {
        let provider = provider(store, name)?
            .ok_or_else(|| Status::failed_precondition(format!("provider '{name}' not found")))?;
        let ty = provider.r#type.trim();
        let profile = match profiles::legacy_type(ty) {
            Some(canonical) => profiles::builtin(canonical).map(|b| b.bytes.clone()),
            None => match profiles::normalize_id(ty) {
                Some(id) => lookup(store, &id)?,
                None => None,
            },
        };
        match profile {
            Some(bytes) => layers.push((name.clone(), bytes)),
            None => crate::log::warn("provider type has no profile; no network rule composed")
                .str("provider", name)
                .str("type", ty)
                .emit(),
        }
    }
    profiles::compose(&policy, &layers)
}
