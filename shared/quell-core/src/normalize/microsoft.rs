//! Microsoft Defender: XDR streaming records on Event Hub and Graph `security/alerts_v2`.

use std::collections::BTreeMap;

use super::util::is_well_known_sid;
use super::{Batch, entra};
use crate::error::InputError;
use crate::json::Obj;
use crate::model::{
    Family, Finding, FindingRef, Severity, SeverityLabel, Source, Status, Subject, ids,
};

/// `{"records": [...]}`: one Event Hub message from Defender XDR streaming or Entra diagnostics.
pub(super) fn event_hub_message(o: &Obj<'_>) -> Result<Batch, InputError> {
    let records = o.objs("records")?;
    if records.is_empty() {
        return Ok(Batch::ignore(
            &o.pointer("records"),
            "an empty page: the message holds no records",
        ));
    }
    records_to_batch(&records)
}

/// A lone record, as exports and documentation show them.
pub(super) fn event_hub_record(o: &Obj<'_>) -> Result<Batch, InputError> {
    records_to_batch(std::slice::from_ref(o))
}

#[derive(Default)]
struct Alert {
    pointer: String,
    tenant: Option<String>,
    info: Option<(String, SeverityLabel, String)>, // title, severity, service source
    detection_source: Option<String>,
    subjects: Vec<Subject>,
    notes: Vec<String>,
}

fn records_to_batch(records: &[Obj<'_>]) -> Result<Batch, InputError> {
    let mut out = Batch::default();
    // One alert is one AlertInfo row plus N AlertEvidence rows: correlate by AlertId.
    let mut alerts: BTreeMap<String, Alert> = BTreeMap::new();
    for r in records {
        let category = r.str_req("category")?;
        let tenant = r.text("tenantId")?.map(str::to_string);
        match category {
            "AdvancedHunting-AlertInfo" | "AdvancedHunting-AlertEvidence" => {
                let p = r.obj_req("properties")?;
                let alert_id = p.str_req("AlertId")?.to_string();
                let a = alerts.entry(alert_id).or_insert_with(|| Alert {
                    pointer: r.here().to_string(),
                    ..Alert::default()
                });
                if a.tenant.is_none() {
                    a.tenant = tenant.clone();
                }
                if category == "AdvancedHunting-AlertInfo" {
                    a.info = Some((
                        p.text("Title")?.unwrap_or("Defender alert").to_string(),
                        p.text("Severity")?
                            .map(SeverityLabel::parse)
                            .unwrap_or(SeverityLabel::Unknown),
                        p.text("ServiceSource")?.unwrap_or("").to_string(),
                    ));
                    a.detection_source = p.text("DetectionSource")?.map(str::to_string);
                } else {
                    evidence_row(&p, &tenant, a)?;
                }
            }
            "RiskyUsers" => out.findings.push(entra::risky_user(
                &r.obj_req("properties")?,
                tenant.as_deref(),
            )?),
            "UserRiskEvents" => out.findings.push(entra::risk_detection(
                &r.obj_req("properties")?,
                tenant.as_deref(),
            )?),
            "RiskyServicePrincipals" => out.findings.push(entra::risky_service_principal(
                &r.obj_req("properties")?,
                tenant.as_deref(),
            )?),
            "ServicePrincipalRiskEvents" => {
                out.findings.push(entra::service_principal_risk_detection(
                    &r.obj_req("properties")?,
                    tenant.as_deref(),
                )?)
            }
            other => out.ignored.push(super::Ignored {
                pointer: r.here().to_string(),
                reason: format!("record category {other:?} carries no identity alert"),
            }),
        }
    }
    for (id, a) in alerts {
        let (title, label, service) = match a.info {
            Some(info) => info,
            None => (
                "Defender alert evidence without its AlertInfo row".to_string(),
                SeverityLabel::Unknown,
                String::new(),
            ),
        };
        let mut notes = a.notes;
        if label == SeverityLabel::Unknown {
            notes.push(
                "severity unknown (no AlertInfo row for this AlertId in the batch); quell will not act"
                    .into(),
            );
        }
        if !service.is_empty() {
            notes.push(format!("service source: {service}"));
        }
        let _ = &a.pointer;
        let family = if service.is_empty() {
            Family::CredentialCompromise
        } else {
            crate::catalog::microsoft_source(&service).unwrap_or(Family::Unrecognized)
        };
        out.findings.push(Finding {
            source: Source::DefenderXdr,
            record: Some(FindingRef::DefenderAlert {
                tenant: a.tenant.clone(),
                id: id.clone(),
                detection_source: a.detection_source.clone(),
            }),
            kind: title.clone(),
            id,
            title,
            severity: Severity::from_label(label),
            family,
            status: Status::Active,
            account: None,
            tenant: a.tenant,
            region: None,
            last_seen: None,
            subjects: a.subjects,
            custom_action: None,
            runbook: None,
            notes,
            conflicts: Vec::new(),
        });
    }
    Ok(out)
}

fn evidence_row(p: &Obj<'_>, tenant: &Option<String>, a: &mut Alert) -> Result<(), InputError> {
    let entity = p.text("EntityType")?.unwrap_or("");
    if !entity.eq_ignore_ascii_case("User") {
        return Ok(());
    }
    // `Impacted` evidence is the identity the alert is about; `Related` (or no role) is
    // context, never contained.
    let role = p.text("EvidenceRole")?.unwrap_or("");
    if !role.eq_ignore_ascii_case("Impacted") {
        a.notes.push(format!(
            "{} appears only as context (EvidenceRole {role:?}); not contained",
            p.text("AccountUpn")?
                .or(p.text("AccountName")?)
                .unwrap_or("an account")
        ));
        return Ok(());
    }
    let subject = account_subject(
        tenant,
        p.text("AccountObjectId")?,
        p.text("AccountUpn")?,
        p.text("AccountName")?,
        p.text("AccountDomain")?,
        p.text("AccountSid")?,
        &mut a.notes,
    );
    if let Some(s) = subject
        && !a.subjects.contains(&s)
    {
        a.subjects.push(s);
    }
    Ok(())
}

/// Picks the most actionable identity from an account's fields: Entra object id, then UPN,
/// then an on-premises (domain, SID) pair. Well-known system SIDs are set aside.
fn account_subject(
    tenant: &Option<String>,
    object_id: Option<&str>,
    upn: Option<&str>,
    name: Option<&str>,
    domain: Option<&str>,
    sid: Option<&str>,
    notes: &mut Vec<String>,
) -> Option<Subject> {
    if let Some(sid) = sid
        && is_well_known_sid(sid)
    {
        notes.push(format!(
            "account {} ({sid}) is a built-in system account; not contained",
            name.unwrap_or("?")
        ));
        return None;
    }
    let object_id = object_id.filter(|id| ids::is_guid(id));
    let upn = upn.filter(|u| ids::is_upn(u));
    if object_id.is_some() || upn.is_some() {
        return Some(Subject::EntraUser {
            tenant: tenant.clone(),
            id: object_id.map(str::to_string),
            name: upn.map(str::to_string),
            on_premises_synced: None,
        });
    }
    if name.is_some() || sid.is_some() {
        return Some(Subject::OnPremisesAccount {
            domain: domain.map(str::to_string),
            name: name.map(str::to_string),
            sid: sid.map(str::to_string),
        });
    }
    notes.push("an account row names no object id, UPN, name or SID".into());
    None
}

/// Graph alert classifications that say nothing malicious happened.
fn is_benign_classification(c: &str) -> bool {
    ["falsePositive", "informationalExpectedActivity"]
        .iter()
        .any(|b| c.eq_ignore_ascii_case(b))
}

/// Graph alert determinations that say the activity was real but legitimate.
fn is_benign_determination(d: &str) -> bool {
    [
        "securityTesting",
        "lineOfBusinessApplication",
        "confirmedActivity",
        "notMalicious",
    ]
    .iter()
    .any(|b| d.eq_ignore_ascii_case(b))
}

/// Graph `microsoft.graph.security.alert` (alerts_v2).
pub(super) fn graph_alert(o: &Obj<'_>) -> Result<Finding, InputError> {
    let id = o.str_req("id")?.to_string();
    let mut notes = Vec::new();
    let tenant = match o.text("tenantId")? {
        Some(t) if ids::is_guid(t) => Some(t.to_string()),
        Some(t) => {
            notes.push(format!(
                "tenantId {t:?} is not a tenant id; acting in quell's own tenant"
            ));
            None
        }
        None => None,
    };
    let label = o
        .text("severity")?
        .map(SeverityLabel::parse)
        .unwrap_or(SeverityLabel::Unknown);
    let mut status = match o
        .text("status")?
        .unwrap_or("new")
        .to_ascii_lowercase()
        .as_str()
    {
        "new" | "inprogress" | "unknown" => Status::Active,
        "resolved" => Status::Resolved,
        _ => Status::Unknown,
    };
    // Whoever triaged the alert said it is not an attack: leave everyone alone.
    let classification = o.text("classification")?.unwrap_or("unknown");
    let determination = o.text("determination")?.unwrap_or("unknown");
    if status == Status::Active
        && (is_benign_classification(classification) || is_benign_determination(determination))
    {
        status = Status::Benign;
        notes.push(format!(
            "classification {classification}, determination {determination}"
        ));
    }
    let service = o.text("serviceSource")?.unwrap_or("unknown");
    notes.push(format!("service source: {service}"));
    let family = crate::catalog::microsoft_source(service).unwrap_or(Family::Unrecognized);
    let mut subjects = Vec::new();
    for ev in o.objs("evidence")? {
        let odata = ev.text("@odata.type")?.unwrap_or("");
        let roles: Vec<&str> = ev.arr("roles")?.iter().filter_map(|r| r.as_str()).collect();
        // The evidence's role decides who is implicated: attacker, compromised or suspicious
        // identities are contained; contextual ones (or none named) only explain the alert.
        let implicated = roles.iter().any(|r| {
            ["attacker", "compromised", "suspicious"]
                .iter()
                .any(|c| r.eq_ignore_ascii_case(c))
        });
        let subject = if odata.ends_with("security.userEvidence") {
            let Some(acct) = ev.obj_opt("userAccount")? else {
                continue;
            };
            account_subject(
                &tenant,
                acct.text("azureAdUserId")?,
                acct.text("userPrincipalName")?,
                acct.text("accountName")?,
                acct.text("domainName")?,
                acct.text("userSid")?,
                &mut notes,
            )
        } else if odata.ends_with("security.oauthApplicationEvidence") {
            // `objectId` here is the *application* object's id, not the service principal's:
            // the service principal is resolved by `appId` before anything is done to it.
            match ev.text("appId")?.filter(|id| ids::is_guid(id)) {
                Some(app) => Some(Subject::ServicePrincipal {
                    tenant: tenant.clone(),
                    id: app.to_string(),
                    app_id: Some(app.to_string()),
                    name: ev.text("displayName").ok().flatten().map(str::to_string),
                    key_id: None,
                }),
                None => {
                    notes.push(
                        "OAuth-app evidence without a valid appId: the service principal cannot be resolved"
                            .into(),
                    );
                    None
                }
            }
        } else {
            None
        };
        let Some(subject) = subject else { continue };
        if !implicated {
            notes.push(format!(
                "{} appears only as context (roles {roles:?}); not contained",
                subject.label()
            ));
            continue;
        }
        if !subjects.contains(&subject) {
            subjects.push(subject);
        }
    }
    Ok(Finding {
        source: Source::GraphAlert,
        record: Some(FindingRef::DefenderAlert {
            tenant: tenant.clone(),
            id: id.clone(),
            detection_source: o.text("detectionSource")?.map(str::to_string),
        }),
        id,
        kind: o
            .text("category")?
            .or(o.text("title")?)
            .unwrap_or("alert")
            .to_string(),
        title: o.text("title")?.unwrap_or("Defender alert").to_string(),
        severity: Severity::from_label(label),
        family,
        status,
        account: None,
        tenant,
        region: None,
        last_seen: None,
        subjects,
        custom_action: None,
        runbook: None,
        notes,
        conflicts: Vec::new(),
    })
}
