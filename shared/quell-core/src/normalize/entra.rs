//! Entra ID Protection: `riskDetection` and `riskyUser`, and for workload identities
//! `servicePrincipalRiskDetection` and `riskyServicePrincipal`, as Graph JSON (v1.0 and beta)
//! or diagnostic records.

use crate::error::InputError;
use crate::json::Obj;
use crate::model::{Family, Finding, Severity, SeverityLabel, Source, Status, Subject, ids};

/// A risk state, matched without case. States that say the risk is over are `Dismissed`; a
/// state quell does not know is `Unknown` (not acted on, and not called dismissed either).
fn risk_status(state: &str) -> Status {
    match state.to_ascii_lowercase().as_str() {
        "atrisk" | "confirmedcompromised" => Status::Active,
        "none" | "confirmedsafe" | "remediated" | "dismissed" => Status::Dismissed,
        _ => Status::Unknown,
    }
}

fn risk_severity(level: Option<&str>) -> Severity {
    // `hidden` means Identity Protection withheld the level: no decision is possible.
    match level.map(str::to_ascii_lowercase).as_deref() {
        Some("low") => Severity::from_label(SeverityLabel::Low),
        Some("medium") => Severity::from_label(SeverityLabel::Medium),
        Some("high") => Severity::from_label(SeverityLabel::High),
        _ => Severity::UNKNOWN,
    }
}

fn is_confirmed(state: &str) -> bool {
    state.eq_ignore_ascii_case("confirmedCompromised")
}

fn tenant_of(tenant: Option<&str>) -> Option<String> {
    tenant.filter(|t| ids::is_guid(t)).map(str::to_string)
}

/// The user a risk record names: its object id, else (a malformed id next to a valid UPN) its
/// UPN, with a note. When neither is usable the record is still a detection: `None`, with a note
/// saying what is unusable, so the plan escalates it to a human instead of guessing or
/// rejecting it.
fn user(
    o: &Obj<'_>,
    id_key: &str,
    tenant: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Option<Subject>, InputError> {
    let id = o.text(id_key)?;
    let raw_upn = o.text("userPrincipalName")?;
    let upn = raw_upn.filter(|u| ids::is_upn(u)).map(str::to_string);
    let id = match id {
        Some(id) if ids::is_guid(id) => Some(id.to_string()),
        Some(bad) if upn.is_some() => {
            notes.push(format!(
                "{}: {bad:?} is not a user object id; the user is taken by UPN",
                o.pointer(id_key)
            ));
            None
        }
        None if upn.is_some() => None,
        bad => {
            notes.push(format!(
                "the user cannot be identified: {} is {} and userPrincipalName is {}; quell does not guess, a human must find the account",
                o.pointer(id_key),
                bad.map_or("missing".to_string(), |b| format!("{b:?}, not an object id")),
                raw_upn.map_or("missing".to_string(), |u| format!("{u:?}, not a UPN")),
            ));
            return Ok(None);
        }
    };
    let tenant = match tenant {
        Some(t) if ids::is_guid(t) => Some(t.to_string()),
        Some(bad) => {
            notes.push(format!(
                "tenant {bad:?} is not a tenant id; the user is looked up in quell's own tenant"
            ));
            None
        }
        None => None,
    };
    Ok(Some(Subject::EntraUser {
        tenant,
        id,
        name: upn,
        on_premises_synced: None,
    }))
}

pub(super) fn risk_detection(o: &Obj<'_>, tenant: Option<&str>) -> Result<Finding, InputError> {
    let id = o.str_req("id")?.to_string();
    let event = o.str_req("riskEventType")?.to_string();
    let state = o.text("riskState")?.unwrap_or("none");
    let status = risk_status(state);
    let mut notes = Vec::new();
    let subject = user(o, "userId", tenant, &mut notes)?;
    let confirmed =
        is_confirmed(state) || event.eq_ignore_ascii_case("adminConfirmedUserCompromised");
    let last_seen = o
        .text("detectedDateTime")?
        .or(o.text("activityDateTime")?)
        .and_then(crate::clock::normalize_rfc3339);
    let mut severity = risk_severity(o.text("riskLevel")?);
    if confirmed && severity.label < SeverityLabel::High {
        severity = Severity::from_label(SeverityLabel::High);
    }
    Ok(Finding {
        source: Source::EntraRiskDetection,
        title: format!("Entra ID Protection: {event} ({state})"),
        id,
        kind: event,
        severity,
        family: Family::IdentityRisk,
        status,
        account: None,
        tenant: tenant_of(tenant),
        region: None,
        last_seen,
        subjects: subject.into_iter().collect(),
        record: None,
        custom_action: None,
        runbook: None,
        notes,
        conflicts: Vec::new(),
    })
}

pub(super) fn risky_user(o: &Obj<'_>, tenant: Option<&str>) -> Result<Finding, InputError> {
    let mut notes = Vec::new();
    let subject = user(o, "id", tenant, &mut notes)?;
    let id = o.str_req("id")?.to_string();
    let state = o.text("riskState")?.unwrap_or("none");
    let mut status = risk_status(state);
    if o.bool_opt("isDeleted")? == Some(true) {
        status = Status::Deleted;
    }
    let last_seen = o
        .text("riskLastUpdatedDateTime")?
        .and_then(crate::clock::normalize_rfc3339);
    let mut severity = risk_severity(o.text("riskLevel")?);
    if is_confirmed(state) && severity.label < SeverityLabel::High {
        severity = Severity::from_label(SeverityLabel::High);
    }
    Ok(Finding {
        source: Source::EntraRiskyUser,
        title: format!("Entra ID Protection: risky user ({state})"),
        id,
        kind: format!("riskyUser:{state}"),
        severity,
        family: Family::IdentityRisk,
        status,
        account: None,
        tenant: tenant_of(tenant),
        region: None,
        last_seen,
        subjects: subject.into_iter().collect(),
        record: None,
        custom_action: None,
        runbook: None,
        notes,
        conflicts: Vec::new(),
    })
}

/// The service principal a workload-identity risk record names, one subject per credential the
/// record names (`keyIds`), or the service principal alone.
fn service_principal(
    o: &Obj<'_>,
    id_key: &str,
    tenant: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<Vec<Subject>, InputError> {
    let id = o.text(id_key)?.filter(|i| ids::is_guid(i));
    let app_id = o
        .text("appId")?
        .filter(|a| ids::is_guid(a))
        .map(str::to_string);
    let name = o
        .text("servicePrincipalDisplayName")?
        .or(o.text("displayName")?)
        .map(str::to_string);
    let id = match (id, &app_id) {
        (Some(id), _) => id.to_string(),
        // Resolved by appId at execution (`servicePrincipals(appId='…')`).
        (None, Some(app)) => {
            notes.push(format!(
                "{} is not a service principal object id; it is resolved by appId",
                o.pointer(id_key)
            ));
            app.clone()
        }
        (None, None) => {
            return Err(InputError::Missing {
                pointer: o.pointer(id_key),
                expected: "a service principal object id or an appId (GUID)",
            });
        }
    };
    let tenant = tenant_of(tenant);
    let keys: Vec<String> = o
        .arr("keyIds")?
        .iter()
        .filter_map(|k| k.as_str())
        .filter(|k| ids::is_guid(k))
        .map(str::to_string)
        .collect();
    let one = |key_id: Option<String>| Subject::ServicePrincipal {
        tenant: tenant.clone(),
        id: id.clone(),
        app_id: app_id.clone(),
        name: name.clone(),
        key_id,
    };
    Ok(if keys.is_empty() {
        vec![one(None)]
    } else {
        keys.into_iter().map(|k| one(Some(k))).collect()
    })
}

pub(super) fn service_principal_risk_detection(
    o: &Obj<'_>,
    tenant: Option<&str>,
) -> Result<Finding, InputError> {
    let id = o.str_req("id")?.to_string();
    let event = o.text("riskEventType")?.unwrap_or("unknown").to_string();
    let state = o.text("riskState")?.unwrap_or("none");
    let mut notes = Vec::new();
    let subjects = service_principal(o, "servicePrincipalId", tenant, &mut notes)?;
    let mut severity = risk_severity(o.text("riskLevel")?);
    if is_confirmed(state) && severity.label < SeverityLabel::High {
        severity = Severity::from_label(SeverityLabel::High);
    }
    let last_seen = o
        .text("detectedDateTime")?
        .or(o.text("activityDateTime")?)
        .and_then(crate::clock::normalize_rfc3339);
    Ok(Finding {
        source: Source::EntraServicePrincipalRiskDetection,
        title: format!("Entra ID Protection (workload identity): {event} ({state})"),
        id,
        kind: event,
        severity,
        family: Family::IdentityRisk,
        status: risk_status(state),
        account: None,
        tenant: tenant_of(tenant),
        region: None,
        last_seen,
        subjects,
        record: None,
        custom_action: None,
        runbook: None,
        notes,
        conflicts: Vec::new(),
    })
}

pub(super) fn risky_service_principal(
    o: &Obj<'_>,
    tenant: Option<&str>,
) -> Result<Finding, InputError> {
    let id = o.str_req("id")?.to_string();
    let state = o.text("riskState")?.unwrap_or("none");
    let mut notes = Vec::new();
    let subjects = service_principal(o, "id", tenant, &mut notes)?;
    let mut status = risk_status(state);
    if o.bool_opt("isEnabled")? == Some(false) {
        notes.push("the service principal is already disabled".into());
    }
    if o.bool_opt("isDeleted")? == Some(true) {
        status = Status::Deleted;
    }
    let mut severity = risk_severity(o.text("riskLevel")?);
    if is_confirmed(state) && severity.label < SeverityLabel::High {
        severity = Severity::from_label(SeverityLabel::High);
    }
    let last_seen = o
        .text("riskLastUpdatedDateTime")?
        .and_then(crate::clock::normalize_rfc3339);
    Ok(Finding {
        source: Source::EntraRiskyServicePrincipal,
        title: format!("Entra ID Protection: risky service principal ({state})"),
        id,
        kind: format!("riskyServicePrincipal:{state}"),
        severity,
        family: Family::IdentityRisk,
        status,
        account: None,
        tenant: tenant_of(tenant),
        region: None,
        last_seen,
        subjects,
        record: None,
        custom_action: None,
        runbook: None,
        notes,
        conflicts: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn risk_enums_match_without_case_and_unknown_states_stay_unknown() {
        assert_eq!(risk_status("AtRisk"), Status::Active);
        assert_eq!(risk_status("CONFIRMEDCOMPROMISED"), Status::Active);
        assert_eq!(risk_status("remediated"), Status::Dismissed);
        assert_eq!(risk_status("underInvestigation"), Status::Unknown);
        assert_eq!(risk_severity(Some("HIGH")).label, SeverityLabel::High);
        assert_eq!(risk_severity(Some("hidden")).label, SeverityLabel::Unknown);
    }

    #[test]
    fn a_bad_user_id_falls_back_to_the_upn_and_a_bad_tenant_is_noted() {
        let v = json!({"userId": "not-a-guid", "userPrincipalName": "ana@contoso.com"});
        let o = crate::json::root(&v).unwrap();
        let mut notes = Vec::new();
        let s = user(&o, "userId", Some("contoso"), &mut notes)
            .unwrap()
            .unwrap();
        assert_eq!(
            s,
            Subject::EntraUser {
                tenant: None,
                id: None,
                name: Some("ana@contoso.com".into()),
                on_premises_synced: None
            }
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        // Neither usable: no subject, never a guess, and a note naming the field.
        let v = json!({"userId": "not-a-guid", "userPrincipalName": "not a upn"});
        let o = crate::json::root(&v).unwrap();
        let mut notes = Vec::new();
        assert_eq!(user(&o, "userId", None, &mut notes).unwrap(), None);
        assert!(notes[0].contains("/userId"), "{notes:?}");
    }
}
