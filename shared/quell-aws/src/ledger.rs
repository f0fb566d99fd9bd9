//! The ledger in DynamoDB (`QUELL_LEDGER_TABLE`): one item per principal and finding
//! (`pk` = principal key, `sk` = finding id, the entry as JSON in `body`, `version` for
//! conditional writes), a `by-finding` index, and breaker counters (`pk` = `breaker#<scope>`,
//! `sk` = UTC hour) incremented with a conditional `ADD`. Released entries and breaker counters
//! carry a `ttl` (epoch seconds) a year out, so the table keeps a year of history on its own; a
//! containment still in force never expires, since its record is what `quell release` undoes.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use quell_ledger::{Entry, Ledger, LedgerError};

use crate::error::{ExecError, classify};

fn build_ok<T>(r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> Result<T, ExecError> {
    r.map_err(|e| ExecError::new("InvalidInput", e.to_string()))
}

/// The index that finds every entry of one finding.
pub const BY_FINDING: &str = "by-finding";
/// How long an item stays (seconds): a year of history.
const RETENTION_SECS: i64 = 366 * 24 * 3600;

/// The DynamoDB calls the ledger makes at run time (every function that contains holds them).
pub const LEDGER_PERMISSIONS: &[&str] = &[
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:DeleteItem",
    "dynamodb:UpdateItem",
    "dynamodb:Query",
];

/// What the hourly release of expired containments holds (the release-expired function): it
/// reads the whole ledger for entries whose `release_after_hours` has passed, and marks each one
/// it released.
pub const EXPIRY_PERMISSIONS: &[&str] = &["dynamodb:Scan", "dynamodb:PutItem"];

/// What the check after containment reads (the verify function): one principal's entries.
pub const VERIFY_LEDGER_PERMISSIONS: &[&str] = &["dynamodb:Query"];

/// What the account sweep holds: it writes a new entry per principal it changed
/// (`quell_ledger::record_sweep`, a conditional `PutItem`), and reads nothing.
pub const SWEEP_LEDGER_PERMISSIONS: &[&str] = &["dynamodb:PutItem"];

pub struct DynamoLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn err(e: ExecError) -> LedgerError {
    LedgerError {
        code: e.code,
        message: e.message,
        retryable: e.retryable,
    }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_string())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn ttl() -> AttributeValue {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    n(now + RETENTION_SECS)
}

/// An item of a listing: a row that does not parse is reported (an error in the log, naming its
/// keys) and skipped, so one bad row never stops a scan, the hourly release or a list.
fn readable(item: &HashMap<String, AttributeValue>) -> Option<Entry> {
    match entry_of(item) {
        Ok(e) => Some(e),
        Err(e) => {
            let key = |k: &str| {
                item.get(k)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            tracing::error!(
                pk = %key("pk"),
                sk = %key("sk"),
                error = %e,
                "a ledger item does not parse; skipped (fix or delete it)"
            );
            None
        }
    }
}

fn entry_of(item: &HashMap<String, AttributeValue>) -> Result<Entry, LedgerError> {
    let body = item
        .get("body")
        .and_then(|v| v.as_s().ok())
        .ok_or_else(|| LedgerError {
            code: "InvalidItem".into(),
            message: "a ledger item has no body".into(),
            retryable: false,
        })?;
    serde_json::from_str(body).map_err(|e| LedgerError {
        code: "InvalidItem".into(),
        message: format!("a ledger item's body does not parse: {e}"),
        retryable: false,
    })
}

fn conditional_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata>(e: &E) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

impl DynamoLedger {
    pub fn new(cfg: &aws_config::SdkConfig, table: &str) -> DynamoLedger {
        DynamoLedger {
            client: aws_sdk_dynamodb::Client::new(cfg),
            table: table.to_string(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Creates the table when it is missing (`quell ledger init`): on-demand, the `by-finding`
    /// index, TTL on `ttl`. Returns whether it created it.
    pub async fn ensure_table(&self) -> Result<bool, ExecError> {
        match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => return Ok(false),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception()) => {}
            Err(e) => return Err(classify(e)),
        }
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };

        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(build_ok(attr("pk"))?)
            .attribute_definitions(build_ok(attr("sk"))?)
            .key_schema(build_ok(key("pk", KeyType::Hash))?)
            .key_schema(build_ok(key("sk", KeyType::Range))?)
            .global_secondary_indexes(build_ok(
                GlobalSecondaryIndex::builder()
                    .index_name(BY_FINDING)
                    .key_schema(build_ok(key("sk", KeyType::Hash))?)
                    .key_schema(build_ok(key("pk", KeyType::Range))?)
                    .projection(
                        Projection::builder()
                            .projection_type(ProjectionType::All)
                            .build(),
                    )
                    .build(),
            )?)
            .send()
            .await
            .map_err(classify)?;
        for _ in 0..60 {
            let d = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
                .map_err(classify)?;
            if d.table()
                .and_then(|t| t.table_status())
                .is_some_and(|st| st.as_str() == "ACTIVE")
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(build_ok(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("ttl")
                    .build(),
            )?)
            .send()
            .await
            .map_err(classify)?;
        Ok(true)
    }

    async fn query(
        &self,
        index: Option<&str>,
        key: &str,
        value: &str,
    ) -> Result<Vec<Entry>, LedgerError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .set_index_name(index.map(str::to_string))
                .key_condition_expression("#k = :v")
                .expression_attribute_names("#k", key)
                .expression_attribute_values(":v", s(value))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| err(classify(e)))?;
            for item in page.items() {
                if item.contains_key("body")
                    && let Some(e) = readable(item)
                {
                    out.push(e);
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }
}

impl Ledger for DynamoLedger {
    /// Documents live under `pk = doc`, `sk = <name>`, in a `doc` attribute: scans and
    /// queries of entries read only items with a `body`, so a document is never an entry.
    async fn put_document(&self, name: &str, body: &str) -> Result<(), LedgerError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s("doc"))
            .item("sk", s(name))
            .item("doc", s(body))
            .send()
            .await
            .map_err(|e| err(classify(e)))?;
        Ok(())
    }

    async fn documents(&self, prefix: &str) -> Result<Vec<(String, String)>, LedgerError> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s("doc"))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| err(classify(e)))?;
            for item in page.items() {
                if let (Some(AttributeValue::S(name)), Some(AttributeValue::S(doc))) =
                    (item.get("sk"), item.get("doc"))
                {
                    out.push((name.clone(), doc.clone()));
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    async fn get(&self, principal: &str, finding: &str) -> Result<Option<Entry>, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(principal))
            .key("sk", s(finding))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| err(classify(e)))?;
        out.item().map(entry_of).transpose()
    }

    async fn put(&self, entry: &Entry, expected: Option<u64>) -> Result<bool, LedgerError> {
        let body = serde_json::to_string(entry).map_err(|e| LedgerError {
            code: "Serialization".into(),
            message: e.to_string(),
            retryable: false,
        })?;
        let state = serde_json::to_value(entry.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(&entry.principal))
            .item("sk", s(&entry.finding))
            .item("body", s(&body))
            .item("version", n(entry.version))
            .item("state", s(&state))
            .item("scope", s(&entry.scope))
            .item("at", s(&entry.at));
        // PutItem replaces the item: an entry in force carries no ttl at all.
        if !entry.in_force() {
            req = req.item("ttl", ttl());
        }
        req = match expected {
            None => req.condition_expression("attribute_not_exists(pk)"),
            Some(v) => req
                .condition_expression("version = :v")
                .expression_attribute_values(":v", n(v)),
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(conditional_failed) => Ok(false),
            Err(e) => Err(err(classify(e))),
        }
    }

    async fn delete(
        &self,
        principal: &str,
        finding: &str,
        expected: u64,
    ) -> Result<bool, LedgerError> {
        match self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(principal))
            .key("sk", s(finding))
            .condition_expression("version = :v")
            .expression_attribute_values(":v", n(expected))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(conditional_failed) => Ok(false),
            Err(e) => Err(err(classify(e))),
        }
    }

    async fn list(&self, principal: Option<&str>) -> Result<Vec<Entry>, LedgerError> {
        if let Some(p) = principal {
            return self.query(None, "pk", p).await;
        }
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| err(classify(e)))?;
            for item in page.items() {
                if item.contains_key("body")
                    && let Some(e) = readable(item)
                {
                    out.push(e);
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    async fn by_finding(&self, finding: &str) -> Result<Vec<Entry>, LedgerError> {
        self.query(Some(BY_FINDING), "sk", finding).await
    }

    async fn take_slot(&self, scope: &str, hour: &str, cap: u32) -> Result<bool, LedgerError> {
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&format!("breaker#{scope}")))
            .key("sk", s(hour))
            .update_expression("ADD #c :one SET #t = :ttl")
            .condition_expression("attribute_not_exists(#c) OR #c < :cap")
            .expression_attribute_names("#c", "count")
            .expression_attribute_names("#t", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":cap", n(cap))
            .expression_attribute_values(":ttl", ttl())
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(conditional_failed) => Ok(false),
            Err(e) => Err(err(classify(e))),
        }
    }

    async fn return_slot(&self, scope: &str, hour: &str) -> Result<(), LedgerError> {
        match self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(&format!("breaker#{scope}")))
            .key("sk", s(hour))
            .update_expression("ADD #c :minus")
            .condition_expression("#c > :zero")
            .expression_attribute_names("#c", "count")
            .expression_attribute_values(":minus", n(-1))
            .expression_attribute_values(":zero", n(0))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(conditional_failed) => Ok(()),
            Err(e) => Err(err(classify(e))),
        }
    }

    async fn slots(&self, scope: &str, hour: &str) -> Result<u32, LedgerError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(&format!("breaker#{scope}")))
            .key("sk", s(hour))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| err(classify(e)))?;
        Ok(out
            .item()
            .and_then(|i| i.get("count"))
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    async fn reset_slots(&self, scope: &str, hour: &str) -> Result<(), LedgerError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(&format!("breaker#{scope}")))
            .key("sk", s(hour))
            .send()
            .await
            .map_err(|e| err(classify(e)))?;
        Ok(())
    }
}
