//! Turns any supported input into [`Finding`]s. Detection is by shape; anything unrecognised is
//! rejected with an error that lists what quell accepts.

mod access_analyzer;
mod entra;
mod eventbridge;
mod guardduty;
pub mod host;
mod microsoft;
mod ocsf;
mod runbook;
mod securityhub;

use serde::Serialize;
use serde_json::Value;

use crate::error::InputError;
use crate::json::{self, Obj};
use crate::model::Finding;

/// What one input turned into.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Batch {
    pub findings: Vec<Finding>,
    /// Well-formed inputs that are not identity findings (insight results, S3 access findings,
    /// timer ticks). Not an error and never an action.
    pub ignored: Vec<Ignored>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ignored {
    pub pointer: String,
    pub reason: String,
}

impl Batch {
    fn ignore(pointer: &str, reason: impl Into<String>) -> Batch {
        Batch {
            findings: Vec::new(),
            ignored: vec![Ignored {
                pointer: pointer.to_string(),
                reason: reason.into(),
            }],
        }
    }
    fn one(f: Finding) -> Batch {
        Batch {
            findings: vec![f],
            ignored: Vec::new(),
        }
    }
    fn extend(&mut self, other: Batch) {
        self.findings.extend(other.findings);
        self.ignored.extend(other.ignored);
    }
}

/// Parses and normalizes raw input bytes (the CLI's and the Lambda runbook's entry point).
pub fn normalize(input: &[u8]) -> Result<Batch, InputError> {
    let value = json::parse(input)?;
    normalize_value(&value)
}

/// Normalizes an already parsed (and limit-checked) JSON value.
pub fn normalize_value(value: &Value) -> Result<Batch, InputError> {
    normalize_at(value, String::new(), 0)
}

/// How many times a JSON string may wrap another JSON document (the Functions host nests three).
const MAX_STRING_LAYERS: usize = 4;

fn normalize_at(value: &Value, at: String, layers: usize) -> Result<Batch, InputError> {
    let here = if at.is_empty() {
        "/".to_string()
    } else {
        at.clone()
    };
    let obj = match value {
        Value::Object(_) => Obj::view(value, at)?,
        Value::String(s) if layers < MAX_STRING_LAYERS => {
            let inner = json::parse(s.as_bytes()).map_err(|e| {
                InputError::unsupported(&here, format!("a string that is not a JSON event: {e}"))
            })?;
            return normalize_at(&inner, at, layers + 1);
        }
        Value::Array(items) => {
            if items.is_empty() {
                return Err(InputError::EmptyBatch { pointer: here });
            }
            let mut out = Batch::default();
            for (i, item) in items.iter().enumerate() {
                out.extend(normalize_at(item, format!("{at}/{i}"), layers)?);
            }
            return Ok(out);
        }
        other => {
            return Err(InputError::wrong_type(&here, "an event object", other));
        }
    };
    detect(&obj, layers)
}

fn detect(o: &Obj<'_>, layers: usize) -> Result<Batch, InputError> {
    if o.has("Data") && (o.has("Metadata") || o.len() == 1) {
        return host::invocation(o, layers);
    }
    // `source` alone is not enough: Entra riskDetection objects carry `"source": "IdentityProtection"`.
    if o.has("detail-type") || (o.has("source") && o.has("detail")) {
        return eventbridge::eventbridge(o);
    }
    if o.has("records") {
        return microsoft::event_hub_message(o);
    }
    if o.has("category") && o.has("properties") {
        // One record of an Event Hub message, as seen in exports and docs.
        return microsoft::event_hub_record(o);
    }
    if o.has("runbook") {
        return runbook::request(o).map(Batch::one);
    }
    if o.has("value") {
        // Some documented responses hold one object in `value` rather than a list.
        let items = match o.get("value") {
            Some(Value::Object(_)) => vec![o.obj_req("value")?],
            _ => o.objs("value")?,
        };
        // A feed that sends an empty page must not page a human: an empty plan.
        if items.is_empty() {
            return Ok(Batch::ignore(
                &o.pointer("value"),
                "an empty page: the collection holds no items",
            ));
        }
        let (items, older) = newest_risk_states(items)?;
        let mut out = Batch {
            findings: Vec::new(),
            ignored: older,
        };
        for item in items {
            out.extend(graph_object(&item)?);
        }
        return Ok(out);
    }
    if let Some(b) = graph_object_opt(o)? {
        return Ok(b);
    }
    let hint = if o.has("detail") || (o.has("schemaVersion") && o.has("service")) {
        ": this looks like a bare GuardDuty finding or a partial envelope; wrap it in the full EventBridge event (with \"source\" and \"detail-type\") as EventBridge delivers it"
    } else if o.has("SchemaVersion") && o.has("ProductArn") {
        ": this looks like a bare ASFF finding; wrap it in a Security Hub EventBridge event (detail.findings[])"
    } else {
        ""
    };
    Err(InputError::UnknownShape {
        pointer: o.here().to_string(),
        hint: hint.to_string(),
    })
}

/// A risky user's states in one list (`/riskyUsers/{id}/history`, newest not necessarily
/// first): only the newest by `riskLastUpdatedDateTime` says where the user stands now, so an
/// old high state remediated since never contains anyone. The older ones are ignored, each
/// with the reason. Other items pass through.
fn newest_risk_states<'a>(items: Vec<Obj<'a>>) -> Result<(Vec<Obj<'a>>, Vec<Ignored>), InputError> {
    let user_of = |o: &Obj<'_>| -> Result<Option<String>, InputError> {
        let risky_user = o.has("riskState")
            && o.has("userPrincipalName")
            && !o.has("riskEventType")
            && !o.has("@odata.type");
        if !risky_user {
            return Ok(None);
        }
        Ok(o.text("userId")?
            .or(o.text("id")?)
            .map(str::to_ascii_lowercase))
    };
    let when = |o: &Obj<'_>| -> Result<String, InputError> {
        Ok(o.text("riskLastUpdatedDateTime")?
            .and_then(crate::clock::normalize_rfc3339)
            .unwrap_or_default())
    };
    let mut newest: std::collections::BTreeMap<String, (String, usize)> =
        std::collections::BTreeMap::new();
    for (i, o) in items.iter().enumerate() {
        if let Some(u) = user_of(o)? {
            let t = when(o)?;
            let e = newest.entry(u).or_insert_with(|| (t.clone(), i));
            if t > e.0 {
                *e = (t, i);
            }
        }
    }
    let mut keep = Vec::new();
    let mut older = Vec::new();
    for (i, o) in items.into_iter().enumerate() {
        match user_of(&o)?.and_then(|u| newest.get(&u).cloned()) {
            Some((t, at)) if at != i => older.push(Ignored {
                pointer: o.here().to_string(),
                reason: format!(
                    "an older state of this user in the list (riskLastUpdatedDateTime {}); quell acts on the newest, of {t}",
                    when(&o)?
                ),
            }),
            _ => keep.push(o),
        }
    }
    Ok((keep, older))
}

fn graph_object(o: &Obj<'_>) -> Result<Batch, InputError> {
    graph_object_opt(o)?.ok_or_else(|| {
        InputError::unsupported(
            o.here(),
            "expected a Graph security alert, riskDetection, riskyUser, servicePrincipalRiskDetection or riskyServicePrincipal",
        )
    })
}

fn graph_object_opt(o: &Obj<'_>) -> Result<Option<Batch>, InputError> {
    let odata = o.str_opt("@odata.type")?.unwrap_or("");
    if odata.ends_with("security.alert") || (o.has("evidence") && o.has("serviceSource")) {
        return microsoft::graph_alert(o).map(|f| Some(Batch::one(f)));
    }
    if odata.ends_with("servicePrincipalRiskDetection")
        || (o.has("riskEventType") && o.has("servicePrincipalId"))
    {
        return entra::service_principal_risk_detection(o, None).map(|f| Some(Batch::one(f)));
    }
    if o.has("riskEventType") {
        return entra::risk_detection(o, None).map(|f| Some(Batch::one(f)));
    }
    if odata.ends_with("riskyServicePrincipal")
        || (o.has("riskState") && o.has("appId") && !o.has("userPrincipalName"))
    {
        return entra::risky_service_principal(o, None).map(|f| Some(Batch::one(f)));
    }
    if o.has("riskState") && o.has("userPrincipalName") {
        return entra::risky_user(o, None).map(|f| Some(Batch::one(f)));
    }
    Ok(None)
}

/// Helpers shared by the normalizers.
pub(crate) mod util {
    use crate::error::InputError;
    use crate::json::Obj;
    use crate::model::ids;

    /// Reads an AWS account id and checks its form.
    pub fn account(o: &Obj<'_>, key: &str) -> Result<String, InputError> {
        let v = o.str_req(key)?;
        if ids::is_account(v) {
            Ok(v.to_string())
        } else {
            Err(InputError::invalid(
                &o.pointer(key),
                v,
                "a 12-digit AWS account id",
            ))
        }
    }

    /// Checks an IAM name read from `o[key]`.
    pub fn iam_name(o: &Obj<'_>, key: &str, v: &str) -> Result<String, InputError> {
        if ids::is_iam_name(v) {
            Ok(v.to_string())
        } else {
            Err(InputError::invalid(
                &o.pointer(key),
                v,
                "an IAM name (1-128 of letters, digits and _+=,.@-)",
            ))
        }
    }

    /// Parts of an IAM or STS ARN: (account, resource type, last path segment, full resource).
    pub struct Arn<'a> {
        pub account: &'a str,
        pub kind: &'a str,
        pub name: &'a str,
        pub path_and_name: &'a str,
        pub service: &'a str,
    }

    pub fn parse_arn(s: &str) -> Option<Arn<'_>> {
        let mut parts = s.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let _partition = parts.next()?;
        let service = parts.next()?;
        let _region = parts.next()?;
        let account = parts.next()?;
        let resource = parts.next()?;
        let (kind, rest) = resource.split_once('/')?;
        let name = rest.rsplit('/').next()?;
        if !ids::is_account(account) || name.is_empty() {
            return None;
        }
        Some(Arn {
            account,
            kind,
            name,
            path_and_name: rest,
            service,
        })
    }

    /// Well-known Windows SIDs of local system accounts, which are never a person to contain.
    pub fn is_well_known_sid(sid: &str) -> bool {
        matches!(
            sid,
            "S-1-5-18" | "S-1-5-19" | "S-1-5-20" | "S-1-5-7" | "S-1-0-0"
        )
    }
}
