//! AWS sources on EventBridge: the envelope and the dispatch to GuardDuty, Security Hub (ASFF)
//! and IAM Access Analyzer, each in its own module.

use super::Batch;
use super::util::account;
use super::{access_analyzer, guardduty, ocsf, securityhub};
use crate::error::InputError;
use crate::json::Obj;

const GD_FINDING: &str = "GuardDuty Finding";
const SH_IMPORTED: &str = "Security Hub Findings - Imported";
const SH_CUSTOM: &str = "Security Hub Findings - Custom Action";
const SH_LEGACY: &str = "Security Hub Findings";
const SH_INSIGHT: &str = "Security Hub Insight Results";
const SH_V2: &str = "Findings Imported V2";
const AA_UNUSED: &str = "Unused Access Finding for IAM entities";
const AA_EXTERNAL: &str = "Access Analyzer Finding";
const AA_INTERNAL: &str = "Internal Access Finding";

pub(super) fn eventbridge(env: &Obj<'_>) -> Result<Batch, InputError> {
    let source = env.str_req("source")?;
    let detail_type = env.str_req("detail-type")?;
    let here = env.here().to_string();
    let spoofed = |detail: &str| InputError::Spoofed {
        pointer: env.pointer("source"),
        source_name: source.to_string(),
        detail: detail.to_string(),
    };
    match (source, detail_type) {
        ("quell", _) => Ok(Batch::ignore(
            &here,
            "quell's own audit event; quell never reacts to itself",
        )),
        ("aws.guardduty", GD_FINDING) => {
            envelope_account(env)?;
            guardduty::findings(&env.obj_req("detail")?)
        }
        ("aws.securityhub", SH_IMPORTED | SH_CUSTOM | SH_LEGACY) => {
            envelope_account(env)?;
            securityhub::findings(env, detail_type == SH_CUSTOM)
        }
        ("aws.securityhub", SH_INSIGHT) => Ok(Batch::ignore(
            &here,
            "Security Hub insight results carry counts, not findings",
        )),
        ("aws.securityhub", SH_V2) => {
            envelope_account(env)?;
            ocsf::findings(env)
        }
        ("aws.access-analyzer", AA_UNUSED) => {
            envelope_account(env)?;
            access_analyzer::finding(&env.obj_req("detail")?).map(Batch::one)
        }
        ("aws.access-analyzer", AA_EXTERNAL | AA_INTERNAL) => Ok(Batch::ignore(
            &here,
            "Access Analyzer external/internal access findings concern resource policies, not identities",
        )),
        ("aws.guardduty" | "aws.securityhub" | "aws.access-analyzer", other) => Ok(Batch::ignore(
            &here,
            format!("{source} event of type {other:?} is not an identity finding"),
        )),
        (_, GD_FINDING) => Err(spoofed("only aws.guardduty sends \"GuardDuty Finding\"")),
        (_, SH_IMPORTED | SH_CUSTOM | SH_LEGACY | SH_V2) => {
            Err(spoofed("only aws.securityhub sends Security Hub findings"))
        }
        (_, AA_UNUSED) => Err(spoofed(
            "only aws.access-analyzer sends unused-access findings",
        )),
        _ => Err(InputError::unsupported(
            &env.pointer("source"),
            format!(
                "EventBridge source {source:?} with detail-type {detail_type:?} is not one quell handles (expected aws.guardduty, aws.securityhub or aws.access-analyzer)"
            ),
        )),
    }
}

fn envelope_account(env: &Obj<'_>) -> Result<(), InputError> {
    // The envelope account receives the event; it is checked but never acted in.
    if env.has("account") {
        account(env, "account")?;
    }
    Ok(())
}
