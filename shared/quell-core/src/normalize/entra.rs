//! Entra ID Protection: `riskDetection` and `riskyUser`, as Graph JSON or diagnostic records.

use crate::error::InputError;
use crate::json::Obj;
use crate::model::{Family, Finding, Severity, SeverityLabel, Source, Status, Subject, ids};

fn risk_status(state: &str) -> Status {
    match state {
        "atRisk" | "confirmedCompromised" => Status::Active,
        // none, confirmedSafe, remediated, dismissed, unknownFutureValue: nothing to contain.
        _ => Status::Dismissed,
    }
}

fn risk_severity(level: Option<&str>) -> Severity {
    match level {
        // `hidden` means Identity Protection withheld the level: no decision is possible.
        Some("low") => Severity::from_label(SeverityLabel::Low),
        Some("medium") => Severity::from_label(SeverityLabel::Medium),
        Some("high") => Severity::from_label(SeverityLabel::High),
        _ => Severity::UNKNOWN,
    }
}

fn tenant_of(tenant: Option<&str>) -> Option<String> {
    tenant.filter(|t| ids::is_guid(t)).map(str::to_string)
}

fn user(o: &Obj<'_>, id_key: &str, tenant: Option<&str>) -> Result<Subject, InputError> {
    let id = o.str_req(id_key)?;
    if !ids::is_guid(id) {
        return Err(InputError::invalid(
            &o.pointer(id_key),
            id,
            "a user object id (GUID)",
        ));
    }
    Ok(Subject::EntraUser {
        tenant: tenant_of(tenant),
        id: Some(id.to_string()),
        name: o
            .text("userPrincipalName")?
            .filter(|u| ids::is_upn(u))
            .map(str::to_string),
        on_premises_synced: None,
    })
}

pub(super) fn risk_detection(o: &Obj<'_>, tenant: Option<&str>) -> Result<Finding, InputError> {
    let id = o.str_req("id")?.to_string();
    let event = o.str_req("riskEventType")?.to_string();
    let state = o.text("riskState")?.unwrap_or("none");
    let status = risk_status(state);
    let subject = user(o, "userId", tenant)?;
    let confirmed = state == "confirmedCompromised" || event == "adminConfirmedUserCompromised";
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
        subjects: vec![subject],
        record: None,
        custom_action: None,
        runbook: None,
        notes: Vec::new(),
    })
}

pub(super) fn risky_user(o: &Obj<'_>, tenant: Option<&str>) -> Result<Finding, InputError> {
    let subject = user(o, "id", tenant)?;
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
    if state == "confirmedCompromised" && severity.label < SeverityLabel::High {
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
        subjects: vec![subject],
        record: None,
        custom_action: None,
        runbook: None,
        notes: Vec::new(),
    })
}
