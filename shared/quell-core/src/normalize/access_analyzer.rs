//! IAM Access Analyzer unused-access findings.

use super::util::{account, parse_arn};
use crate::error::InputError;
use crate::json::Obj;
use crate::model::{Family, Finding, Severity, SeverityLabel, Source, Status, Subject, ids};

pub(super) fn finding(d: &Obj<'_>) -> Result<Finding, InputError> {
    let id = d.str_req("findingId")?.to_string();
    let kind = d.str_req("findingType")?.to_string();
    let resource = d.str_req("resource")?;
    let acct = account(d, "accountId")?;
    let arn = parse_arn(resource)
        .filter(|a| a.service == "iam" && (a.kind == "user" || a.kind == "role"))
        .ok_or_else(|| {
            InputError::invalid(&d.pointer("resource"), resource, "an IAM user or role ARN")
        })?;
    if !ids::is_iam_name(arn.name) {
        return Err(InputError::invalid(
            &d.pointer("resource"),
            resource,
            "an IAM user or role ARN",
        ));
    }
    let status = if d.bool_opt("isDeleted")? == Some(true) {
        Status::Deleted
    } else if d.text("error")?.is_some() {
        Status::Error
    } else {
        match d.text("status")?.unwrap_or("ACTIVE") {
            "ARCHIVED" => Status::Archived,
            "RESOLVED" => Status::Resolved,
            _ => Status::Active,
        }
    };
    let subject = if arn.kind == "user" {
        Subject::IamUser {
            account: arn.account.to_string(),
            name: arn.name.to_string(),
        }
    } else {
        Subject::IamRole {
            account: arn.account.to_string(),
            name: arn.name.to_string(),
        }
    };
    let mut notes = Vec::new();
    if arn.account != acct {
        notes.push(format!(
            "the resource ARN's account {} differs from accountId {acct}; quell acts in the ARN's account",
            arn.account
        ));
    }
    if let Some(e) = d.text("error")? {
        notes.push(format!(
            "Access Analyzer could not analyze the resource: {e}"
        ));
    }
    Ok(Finding {
        source: Source::AccessAnalyzer,
        title: format!("{kind} on {resource}"),
        id,
        kind,
        // Unused access is hygiene, not an attack.
        severity: Severity::from_label(SeverityLabel::Low),
        family: Family::UnusedAccess,
        status,
        account: Some(arn.account.to_string()),
        tenant: None,
        region: None,
        last_seen: None,
        subjects: vec![subject],
        record: None,
        custom_action: None,
        runbook: None,
        notes,
        conflicts: Vec::new(),
    })
}
