//! The finding types quell knows, each with the family that decides its response. One table per
//! source. A type that is not here gets [`Family::Unrecognized`]: escalated to a human, never
//! contained, so a new detection type can never trigger an untested containment.

use crate::model::Family;

use Family::{AnomalousBehavior as Anomaly, CredentialCompromise as Compromise, Posture};

/// GuardDuty finding types whose actor is an IAM principal (`resource.accessKeyDetails`), from
/// the GuardDuty User Guide's IAM, S3 Protection and Extended Threat Detection finding types.
pub const GUARDDUTY: &[(&str, Family)] = &[
    // IAM
    ("CredentialAccess:IAMUser/AnomalousBehavior", Compromise),
    ("DefenseEvasion:IAMUser/AnomalousBehavior", Compromise),
    ("DefenseEvasion:IAMUser/BedrockLoggingDisabled", Compromise),
    ("Discovery:IAMUser/AnomalousBehavior", Anomaly),
    ("Exfiltration:IAMUser/AnomalousBehavior", Compromise),
    ("Impact:IAMUser/AnomalousBehavior", Compromise),
    ("InitialAccess:IAMUser/AnomalousBehavior", Compromise),
    ("PenTest:IAMUser/KaliLinux", Anomaly),
    ("PenTest:IAMUser/ParrotLinux", Anomaly),
    ("PenTest:IAMUser/PentooLinux", Anomaly),
    ("Persistence:IAMUser/AnomalousBehavior", Compromise),
    ("Policy:IAMUser/RootCredentialUsage", Posture),
    ("Policy:IAMUser/ShortTermRootCredentialUsage", Posture),
    ("PrivilegeEscalation:IAMUser/AnomalousBehavior", Compromise),
    ("Recon:IAMUser/MaliciousIPCaller", Anomaly),
    ("Recon:IAMUser/MaliciousIPCaller.Custom", Anomaly),
    ("Recon:IAMUser/TorIPCaller", Anomaly),
    ("Stealth:IAMUser/CloudTrailLoggingDisabled", Compromise),
    ("Stealth:IAMUser/PasswordPolicyChange", Compromise),
    (
        "UnauthorizedAccess:IAMUser/ConsoleLoginSuccess.B",
        Compromise,
    ),
    (
        "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.InsideAWS",
        Compromise,
    ),
    (
        "UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
        Compromise,
    ),
    (
        "UnauthorizedAccess:IAMUser/ResourceCredentialExfiltration.OutsideAWS",
        Compromise,
    ),
    ("UnauthorizedAccess:IAMUser/MaliciousIPCaller", Compromise),
    (
        "UnauthorizedAccess:IAMUser/MaliciousIPCaller.Custom",
        Compromise,
    ),
    ("UnauthorizedAccess:IAMUser/TorIPCaller", Compromise),
    // S3 Protection: the actor is in accessKeyDetails.
    ("Discovery:S3/AnomalousBehavior", Anomaly),
    ("Discovery:S3/MaliciousIPCaller", Anomaly),
    ("Discovery:S3/MaliciousIPCaller.Custom", Anomaly),
    ("Discovery:S3/TorIPCaller", Anomaly),
    ("Exfiltration:S3/AnomalousBehavior", Compromise),
    ("Exfiltration:S3/MaliciousIPCaller", Compromise),
    ("Impact:S3/AnomalousBehavior.Delete", Compromise),
    ("Impact:S3/AnomalousBehavior.Permission", Compromise),
    ("Impact:S3/AnomalousBehavior.Write", Compromise),
    ("Impact:S3/MaliciousIPCaller", Compromise),
    ("PenTest:S3/KaliLinux", Anomaly),
    ("PenTest:S3/ParrotLinux", Anomaly),
    ("PenTest:S3/PentooLinux", Anomaly),
    ("Policy:S3/AccountBlockPublicAccessDisabled", Posture),
    ("Policy:S3/BucketAnonymousAccessGranted", Posture),
    ("Policy:S3/BucketBlockPublicAccessDisabled", Posture),
    ("Policy:S3/BucketPublicAccessGranted", Posture),
    ("Stealth:S3/ServerAccessLoggingDisabled", Compromise),
    ("UnauthorizedAccess:S3/MaliciousIPCaller.Custom", Compromise),
    ("UnauthorizedAccess:S3/TorIPCaller", Compromise),
    ("Object:S3/MaliciousFile", Anomaly),
    // Extended Threat Detection attack sequences.
    ("AttackSequence:IAM/CompromisedCredentials", Compromise),
    ("AttackSequence:S3/CompromisedData", Compromise),
];

/// GuardDuty resource kinds (`Purpose:<Kind>/…`) that quell never contains unless the finding
/// names an IAM actor: a finding about them with no actor is outside quell's scope.
pub const GUARDDUTY_NON_IDENTITY: &[&str] = &[
    "EC2",
    "Kubernetes",
    "Runtime",
    "Lambda",
    "RDS",
    "ECS",
    "EKS",
    "EC2Malware",
];

/// The family of a GuardDuty type quell knows.
pub fn guardduty(kind: &str) -> Option<Family> {
    let kind = without_stage(kind);
    GUARDDUTY.iter().find(|(k, _)| *k == kind).map(|(_, f)| *f)
}

/// A GuardDuty type without its stage prefix: findings from a feature's beta period carry
/// `[beta]Exfiltration:S3/AnomalousBehavior`, the same type as `Exfiltration:S3/AnomalousBehavior`.
pub fn without_stage(kind: &str) -> &str {
    match kind.trim_start().strip_prefix('[') {
        Some(rest) => rest
            .split_once(']')
            .filter(|(stage, _)| {
                !stage.is_empty() && stage.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            .map_or(kind, |(_, t)| t.trim_start()),
        None => kind,
    }
}

/// The resource kind of a GuardDuty type: `S3` in `Exfiltration:S3/AnomalousBehavior`.
pub fn guardduty_resource(kind: &str) -> &str {
    without_stage(kind)
        .split_once(':')
        .and_then(|(_, rest)| rest.split_once('/'))
        .map_or("", |(r, _)| r)
}

/// Microsoft alert service sources (Graph `serviceSource`, XDR `ServiceSource`), compared
/// without case, spaces or punctuation. Identity-relevant detections contain; data-loss and
/// insider-risk alerts are about what a person did, not a stolen identity: notify.
pub const MICROSOFT_SOURCES: &[(&str, Family)] = &[
    ("microsoftdefenderforidentity", Compromise),
    ("microsoftdefenderforendpoint", Compromise),
    ("microsoftdefenderforoffice365", Compromise),
    ("microsoftdefenderforcloudapps", Compromise),
    ("microsoftcloudappsecurity", Compromise),
    ("microsoftdefenderforcloud", Compromise),
    ("microsoft365defender", Compromise),
    ("microsoftdefenderxdr", Compromise),
    ("azureadidentityprotection", Compromise),
    ("microsoftentraidprotection", Compromise),
    ("microsoftappgovernance", Compromise),
    ("appgovernance", Compromise),
    ("microsoftsentinel", Compromise),
    ("datalossprevention", Anomaly),
    ("microsoftdatalossprevention", Anomaly),
    ("microsoftinsiderriskmanagement", Anomaly),
];

/// The family of a Microsoft service source quell knows.
pub fn microsoft_source(source: &str) -> Option<Family> {
    let key: String = source
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    MICROSOFT_SOURCES
        .iter()
        .find(|(s, _)| *s == key)
        .map(|(_, f)| *f)
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_stage_prefix_names_the_same_type() {
        assert_eq!(
            without_stage("[beta]Exfiltration:S3/AnomalousBehavior"),
            "Exfiltration:S3/AnomalousBehavior"
        );
        assert_eq!(
            guardduty("[beta]Exfiltration:S3/AnomalousBehavior"),
            guardduty("Exfiltration:S3/AnomalousBehavior")
        );
        assert_eq!(
            guardduty_resource("[preview]Discovery:S3/TorIPCaller"),
            "S3"
        );
        // Not a stage prefix: left as it is (and unrecognised).
        assert_eq!(without_stage("[a b]X:Y/Z"), "[a b]X:Y/Z");
        assert_eq!(without_stage("[]X:Y/Z"), "[]X:Y/Z");
    }

    use super::*;

    #[test]
    fn tables_answer_known_types_and_nothing_else() {
        assert_eq!(
            guardduty("Exfiltration:S3/AnomalousBehavior"),
            Some(Family::CredentialCompromise)
        );
        assert_eq!(guardduty("Exfiltration:S3/SomethingNew"), None);
        assert_eq!(guardduty_resource("Backdoor:EC2/C&CActivity.B!DNS"), "EC2");
        assert_eq!(
            microsoft_source("Microsoft Defender for Identity"),
            Some(Family::CredentialCompromise)
        );
        assert_eq!(
            microsoft_source("microsoftDefenderForIdentity"),
            Some(Family::CredentialCompromise)
        );
        assert_eq!(microsoft_source("someNewProduct"), None);
        let mut kinds: Vec<&str> = GUARDDUTY.iter().map(|(k, _)| *k).collect();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), GUARDDUTY.len(), "no type twice");
    }
}
