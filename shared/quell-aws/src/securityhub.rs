//! Reading one ASFF finding without linking the ASFF model.
//!
//! quell reads a Security Hub finding before it updates it, for two fields: `Workflow.Status`
//! and `Note.Text`. The SDK's `GetFindings` deserializes the whole `AwsSecurityFinding`, every
//! resource type's details included; that deserializer was 2.7 MB of the 14.5 MB GuardDuty
//! binary (`docs/performance.md`). So the read goes out as `GetFindingsV2`, whose output is a
//! list of generic `Document`s, and an interceptor turns the request into the `GetFindings`
//! request of the Security Hub API reference before it is signed: `POST /findings` with
//! `{"Filters": {...}, "MaxResults": 1}`. The response, `{"Findings": [ASFF...], "NextToken"}`,
//! parses as `GetFindingsV2`'s output (a list of documents and a token). Signing, retries,
//! timeouts and endpoints are the SDK's own; the IAM action is `securityhub:GetFindings` for
//! both operations.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use serde_json::{Value, json};

use crate::error::{ExecError, classify};

/// Rewrites a `GetFindingsV2` request into `GetFindings` with these filters.
#[derive(Debug)]
struct AsGetFindings {
    body: String,
}

impl Intercept for AsGetFindings {
    fn name(&self) -> &'static str {
        "quell.AsGetFindings"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let uri = request.uri().to_string();
        // Each attempt passes here; a retry may start from the request already rewritten.
        if let Some(base) = uri.strip_suffix("/findingsv2") {
            request.set_uri(format!("{base}/findings"))?;
        } else if !uri.ends_with("/findings") {
            return Err(format!("unexpected GetFindingsV2 URI {uri}").into());
        }
        *request.body_mut() = SdkBody::from(self.body.clone());
        request
            .headers_mut()
            .insert("content-length", self.body.len().to_string());
        Ok(())
    }
}

/// The `GetFindings` request body that selects one finding by `Id` and `ProductArn`.
pub(crate) fn get_findings_body(id: &str, product_arn: &str) -> String {
    let equals = |v: &str| json!([{"Value": v, "Comparison": "EQUALS"}]);
    json!({
        "Filters": {"Id": equals(id), "ProductArn": equals(product_arn)},
        "MaxResults": 1,
    })
    .to_string()
}

/// The ASFF finding `id` of `product_arn` as JSON, or `None` when Security Hub holds none.
pub async fn asff_finding(
    sh: &aws_sdk_securityhub::Client,
    id: &str,
    product_arn: &str,
) -> Result<Option<Value>, ExecError> {
    let out = sh
        .get_findings_v2()
        .customize()
        .interceptor(AsGetFindings {
            body: get_findings_body(id, product_arn),
        })
        .send()
        .await
        .map_err(classify)?;
    Ok(out.findings().first().map(crate::docs::document_json))
}

/// `Workflow.Status` and `Note.Text` of an ASFF finding.
pub fn workflow_and_note(finding: &Value) -> (Option<&str>, Option<&str>) {
    (
        finding["Workflow"]["Status"].as_str(),
        finding["Note"]["Text"].as_str(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_selects_one_finding_by_id_and_product() {
        let body: Value = serde_json::from_str(&get_findings_body(
            "arn:aws:securityhub:us-east-1:111122223333:finding/1",
            "arn:aws:securityhub:us-east-1::product/aws/guardduty",
        ))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "Filters": {
                    "Id": [{"Value": "arn:aws:securityhub:us-east-1:111122223333:finding/1", "Comparison": "EQUALS"}],
                    "ProductArn": [{"Value": "arn:aws:securityhub:us-east-1::product/aws/guardduty", "Comparison": "EQUALS"}],
                },
                "MaxResults": 1,
            })
        );
    }

    #[test]
    fn workflow_and_note_read_the_asff_fields() {
        let f = json!({"Workflow": {"Status": "NOTIFIED"}, "Note": {"Text": "quell: x"}});
        assert_eq!(workflow_and_note(&f), (Some("NOTIFIED"), Some("quell: x")));
        assert_eq!(workflow_and_note(&json!({})), (None, None));
    }
}
