//! The ledger in Azure Table Storage (the Bicep's storage account, table `QUELL_LEDGER_TABLE`):
//! one entity per principal and finding (keys: the principal and finding, base64url-encoded since
//! Table keys forbid `/`, `#` and `?`; `Principal`, `Finding` readable beside them), the entry as
//! JSON in `Body`, a `Version` for conditional writes made with `If-Match` on the entity's ETag,
//! and breaker counters (`breaker#<scope>`, UTC hour).
//!
//! Authentication: the managed identity's bearer token (scope `https://storage.azure.com/.default`,
//! `x-ms-version` 2019-02-02 or later), or a Shared Key (Azurite and local runs).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use quell_ledger::{Entry, Ledger, LedgerError};
use reqwest::Method;
use serde_json::{Value, json};

use crate::token::TokenSource;

const VERSION: &str = "2019-02-02";
pub(crate) const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// How the ledger (and the verify queue) sign their requests.
#[derive(Clone)]
pub enum TableAuth {
    /// A bearer token (the managed identity): the production path.
    Token(Arc<dyn TokenSource>),
    /// `SharedKeyLite` with the account key: Azurite and local runs.
    SharedKey { account: String, key: Vec<u8> },
}

impl TableAuth {
    /// Authorizes `req` to `url`: the bearer token, or Shared Key Lite over the string
    /// `to_sign` builds from the canonicalized resource (`/<account>` + the URL's path), which
    /// each storage service frames differently.
    pub(crate) async fn authorize(
        &self,
        req: reqwest::RequestBuilder,
        url: &str,
        to_sign: impl FnOnce(&str) -> String,
    ) -> Result<reqwest::RequestBuilder, crate::AzError> {
        match self {
            TableAuth::Token(tokens) => Ok(req.bearer_auth(tokens.token(STORAGE_SCOPE).await?)),
            TableAuth::SharedKey { account, key } => {
                let path = reqwest::Url::parse(url)
                    .map(|u| u.path().to_string())
                    .unwrap_or_default();
                let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
                    return Err(crate::AzError {
                        status: 0,
                        code: "Configuration".into(),
                        message: "the storage key is not usable".into(),
                        retryable: false,
                    });
                };
                mac.update(to_sign(&format!("/{account}{path}")).as_bytes());
                let sig = STANDARD.encode(mac.finalize().into_bytes());
                Ok(req.header("Authorization", format!("SharedKeyLite {account}:{sig}")))
            }
        }
    }

    /// Azurite's well-known development account and key (public, in Microsoft's docs).
    pub fn azurite() -> TableAuth {
        let key = STANDARD
            .decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
            .unwrap_or_default();
        TableAuth::SharedKey {
            account: "devstoreaccount1".into(),
            key,
        }
    }
}

pub struct TableLedger {
    client: reqwest::Client,
    /// `https://<account>.table.core.windows.net` or `http://127.0.0.1:<port>/<account>`.
    endpoint: String,
    table: String,
    auth: TableAuth,
}

fn err(code: &str, message: impl Into<String>, retryable: bool) -> LedgerError {
    LedgerError {
        code: code.into(),
        message: message.into(),
        retryable,
    }
}

fn key(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s.as_bytes())
}

pub(crate) fn http_date() -> String {
    let f = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::OffsetDateTime::now_utc()
        .format(&f)
        .unwrap_or_default()
}

struct Got {
    status: u16,
    etag: Option<String>,
    /// The continuation of a query (`x-ms-continuation-NextPartitionKey` / `-NextRowKey`).
    next: Option<(String, String)>,
    body: Value,
}

impl TableLedger {
    pub fn new(endpoint: &str, table: &str, auth: TableAuth) -> TableLedger {
        TableLedger {
            client: crate::tls::reqwest_builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap_or_default(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            table: table.to_string(),
            auth,
        }
    }

    /// Azurite's well-known development account.
    pub fn azurite(endpoint: &str, table: &str) -> TableLedger {
        TableLedger::new(endpoint, table, TableAuth::azurite())
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Got, LedgerError> {
        let url = format!("{}{path}{query}", self.endpoint);
        let date = http_date();
        let mut req = self
            .client
            .request(method, &url)
            .header("x-ms-date", &date)
            .header("x-ms-version", VERSION)
            .header("Accept", "application/json;odata=nometadata")
            .header("DataServiceVersion", "3.0;NetFx");
        // Shared Key Lite for the Table service signs the date and the canonicalized resource
        // (`/<account>` + the path, as the request names it).
        req = self
            .auth
            .authorize(req, &url, |resource| format!("{date}\n{resource}"))
            .await
            .map_err(|e| err(&e.code, e.message, e.retryable))?;
        if let Some(tag) = if_match {
            req = req.header("If-Match", tag);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            err(
                "Transport",
                format!("table storage: {}", e.without_url()),
                true,
            )
        })?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let next = match (
            header("x-ms-continuation-NextPartitionKey"),
            header("x-ms-continuation-NextRowKey"),
        ) {
            (Some(pk), rk) => Some((pk, rk.unwrap_or_default())),
            _ => None,
        };
        let text = resp.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status >= 500 || status == 429 || status == 408 {
            return Err(err(
                "TableStorageUnavailable",
                format!("table storage answered {status}"),
                true,
            ));
        }
        if status == 401 || status == 403 {
            return Err(err(
                "AuthorizationFailure",
                format!(
                    "table storage refused quell ({status}): grant the identity Storage Table Data Contributor on the account"
                ),
                false,
            ));
        }
        Ok(Got {
            status,
            etag,
            next,
            body,
        })
    }

    fn entity_path(&self, pk: &str, rk: &str) -> String {
        format!("/{}(PartitionKey='{pk}',RowKey='{rk}')", self.table)
    }

    async fn entity(&self, pk: &str, rk: &str) -> Result<Option<(Value, String)>, LedgerError> {
        let g = self
            .send(Method::GET, &self.entity_path(pk, rk), "", None, None)
            .await?;
        match g.status {
            200 => Ok(Some((g.body, g.etag.unwrap_or_else(|| "*".into())))),
            404 => Ok(None),
            other => Err(err(
                "TableError",
                format!("reading an entity answered {other}: {}", g.body),
                false,
            )),
        }
    }

    /// Creates the table when missing (`quell ledger init`, and the handler at start).
    pub async fn ensure_table(&self) -> Result<bool, LedgerError> {
        let g = self
            .send(
                Method::POST,
                "/Tables",
                "",
                Some(&json!({"TableName": self.table})),
                None,
            )
            .await?;
        match g.status {
            201 | 204 => Ok(true),
            409 => Ok(false),
            other => Err(err(
                "TableError",
                format!("creating the table answered {other}: {}", g.body),
                false,
            )),
        }
    }

    async fn query(&self, filter: &str) -> Result<Vec<Entry>, LedgerError> {
        let mut out = Vec::new();
        let mut next: Option<(String, String)> = None;
        // A page holds at most 1,000 entities; the bound only stops a server that never ends.
        for _ in 0..10_000 {
            let mut q = format!("?$filter={}", urlencoding::encode(filter));
            if let Some((pk, rk)) = next.take() {
                q.push_str(&format!(
                    "&NextPartitionKey={}&NextRowKey={}",
                    urlencoding::encode(&pk),
                    urlencoding::encode(&rk)
                ));
            }
            let g = self
                .send(Method::GET, &format!("/{}()", self.table), &q, None, None)
                .await?;
            if g.status != 200 {
                return Err(err(
                    "TableError",
                    format!("a query answered {}: {}", g.status, g.body),
                    false,
                ));
            }
            for e in g.body["value"].as_array().into_iter().flatten() {
                if let Some(body) = e["Body"].as_str() {
                    // A row that does not parse is reported and skipped: it never stops a
                    // scan, the hourly release or a list.
                    match entry_of(body, e) {
                        Ok(entry) => out.push(entry),
                        Err(x) => tracing::error!(
                            principal = e["Principal"].as_str().unwrap_or(""),
                            finding = e["Finding"].as_str().unwrap_or(""),
                            error = %x,
                            "a ledger entity does not parse; skipped (fix or delete it)"
                        ),
                    }
                }
            }
            match g.next {
                Some(n) => next = Some(n),
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    fn to_entity(entry: &Entry) -> Result<Value, LedgerError> {
        let body =
            serde_json::to_string(entry).map_err(|e| err("Serialization", e.to_string(), false))?;
        let mut entity = json!({
            "PartitionKey": key(&entry.principal),
            "RowKey": key(&entry.finding),
            "Principal": entry.principal,
            "Finding": entry.finding,
            "Scope": entry.scope,
            "At": entry.at,
            "Version@odata.type": "Edm.Int64",
            "Version": entry.version.to_string(),
        });
        // Table Storage caps a string property at 64 KiB (32K UTF-16 units): a large entry's
        // body is split across Body, Body1, Body2, … (an entity holds up to 1 MiB).
        let chars: Vec<char> = body.chars().collect();
        let chunks: Vec<String> = chars
            .chunks(BODY_CHUNK)
            .map(|c| c.iter().collect())
            .collect();
        if chunks.len() > MAX_BODY_CHUNKS {
            return Err(err(
                "EntryTooLarge",
                format!(
                    "the entry of {} for {} is {} characters, over what one Table entity holds; trim its actions",
                    entry.principal,
                    entry.finding,
                    chars.len()
                ),
                false,
            ));
        }
        for (i, c) in chunks.into_iter().enumerate() {
            let name = if i == 0 {
                "Body".to_string()
            } else {
                format!("Body{i}")
            };
            entity[name] = Value::String(c);
        }
        Ok(entity)
    }
}

/// Characters per body property: a UTF-16 string property holds 64 KiB, and a character may
/// take two units.
const BODY_CHUNK: usize = 16_000;
/// Body properties at the most (an entity holds 1 MiB).
const MAX_BODY_CHUNKS: usize = 30;

/// An entity's entry (its body joined from Body, Body1, …), with the service's own `Timestamp`
/// of its last write.
fn entry_of(first: &str, entity: &Value) -> Result<Entry, LedgerError> {
    let mut body = first.to_string();
    for i in 1..MAX_BODY_CHUNKS {
        match entity[format!("Body{i}")].as_str() {
            Some(part) => body.push_str(part),
            None => break,
        }
    }
    let mut e: Entry =
        serde_json::from_str(&body).map_err(|x| err("InvalidItem", x.to_string(), false))?;
    e.stored_at = entity["Timestamp"]
        .as_str()
        .and_then(quell_core::clock::normalize_rfc3339);
    Ok(e)
}

fn version_of(v: &Value) -> Option<u64> {
    match &v["Version"] {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

impl Ledger for TableLedger {
    /// Documents live in partition `doc`, row key the encoded name, text in `Doc`: entry
    /// queries read only entities with a `Body`, so a document is never an entry.
    async fn put_document(&self, name: &str, body: &str) -> Result<(), LedgerError> {
        let entity = json!({"PartitionKey": "doc", "RowKey": key(name), "Name": name, "Doc": body});
        let g = self
            .send(
                Method::PUT,
                &self.entity_path("doc", &key(name)),
                "",
                Some(&entity),
                None,
            )
            .await?;
        match g.status {
            200..=299 => Ok(()),
            other => Err(err(
                "TableError",
                format!("writing a document answered {other}: {}", g.body),
                other == 503 || other == 500,
            )),
        }
    }

    async fn documents(&self, prefix: &str) -> Result<Vec<(String, String)>, LedgerError> {
        let mut out = Vec::new();
        let mut next: Option<(String, String)> = None;
        for _ in 0..10_000 {
            let mut q = format!("?$filter={}", urlencoding::encode("PartitionKey eq 'doc'"));
            if let Some((pk, rk)) = next.take() {
                q.push_str(&format!(
                    "&NextPartitionKey={}&NextRowKey={}",
                    urlencoding::encode(&pk),
                    urlencoding::encode(&rk)
                ));
            }
            let g = self
                .send(Method::GET, &format!("/{}()", self.table), &q, None, None)
                .await?;
            if g.status != 200 {
                return Err(err(
                    "TableError",
                    format!("a query answered {}: {}", g.status, g.body),
                    false,
                ));
            }
            for e in g.body["value"].as_array().into_iter().flatten() {
                if let (Some(name), Some(doc)) = (e["Name"].as_str(), e["Doc"].as_str())
                    && name.starts_with(prefix)
                {
                    out.push((name.to_string(), doc.to_string()));
                }
            }
            match g.next {
                Some(n) => next = Some(n),
                None => return Ok(out),
            }
        }
        Ok(out)
    }

    async fn get(&self, principal: &str, finding: &str) -> Result<Option<Entry>, LedgerError> {
        match self.entity(&key(principal), &key(finding)).await? {
            Some((v, _)) => entry_of(v["Body"].as_str().unwrap_or("{}"), &v).map(Some),
            None => Ok(None),
        }
    }

    async fn put(&self, entry: &Entry, expected: Option<u64>) -> Result<bool, LedgerError> {
        let entity = Self::to_entity(entry)?;
        let (pk, rk) = (key(&entry.principal), key(&entry.finding));
        match expected {
            None => {
                let g = self
                    .send(
                        Method::POST,
                        &format!("/{}", self.table),
                        "",
                        Some(&entity),
                        None,
                    )
                    .await?;
                match g.status {
                    201 | 204 => Ok(true),
                    409 => Ok(false),
                    other => Err(err(
                        "TableError",
                        format!("insert answered {other}: {}", g.body),
                        false,
                    )),
                }
            }
            Some(v) => {
                let Some((current, etag)) = self.entity(&pk, &rk).await? else {
                    return Ok(false);
                };
                if version_of(&current) != Some(v) {
                    return Ok(false);
                }
                let g = self
                    .send(
                        Method::PUT,
                        &self.entity_path(&pk, &rk),
                        "",
                        Some(&entity),
                        Some(&etag),
                    )
                    .await?;
                match g.status {
                    204 | 200 => Ok(true),
                    412 | 404 => Ok(false),
                    other => Err(err(
                        "TableError",
                        format!("update answered {other}: {}", g.body),
                        false,
                    )),
                }
            }
        }
    }

    async fn delete(
        &self,
        principal: &str,
        finding: &str,
        expected: u64,
    ) -> Result<bool, LedgerError> {
        let (pk, rk) = (key(principal), key(finding));
        let Some((current, etag)) = self.entity(&pk, &rk).await? else {
            return Ok(false);
        };
        if version_of(&current) != Some(expected) {
            return Ok(false);
        }
        let g = self
            .send(
                Method::DELETE,
                &self.entity_path(&pk, &rk),
                "",
                None,
                Some(&etag),
            )
            .await?;
        Ok(matches!(g.status, 204 | 200))
    }

    async fn list(&self, principal: Option<&str>) -> Result<Vec<Entry>, LedgerError> {
        match principal {
            Some(p) => self.query(&format!("PartitionKey eq '{}'", key(p))).await,
            None => self.query("Body ne ''").await,
        }
    }

    async fn by_finding(&self, finding: &str) -> Result<Vec<Entry>, LedgerError> {
        self.query(&format!("RowKey eq '{}'", key(finding))).await
    }

    async fn take_slot(&self, scope: &str, hour: &str, cap: u32) -> Result<bool, LedgerError> {
        let (pk, rk) = (key(&format!("breaker#{scope}")), key(hour));
        // Optimistic increment: read, then write on the ETag read; retry a lost race.
        for _ in 0..20 {
            match self.entity(&pk, &rk).await? {
                None => {
                    let e = json!({"PartitionKey": pk, "RowKey": rk, "Scope": scope, "Hour": hour, "Count": 1});
                    let g = self
                        .send(
                            Method::POST,
                            &format!("/{}", self.table),
                            "",
                            Some(&e),
                            None,
                        )
                        .await?;
                    if matches!(g.status, 201 | 204) {
                        return Ok(cap >= 1);
                    }
                }
                Some((current, etag)) => {
                    let n = current["Count"].as_u64().unwrap_or(0);
                    if n >= u64::from(cap) {
                        return Ok(false);
                    }
                    let e = json!({"PartitionKey": pk, "RowKey": rk, "Scope": scope, "Hour": hour, "Count": n + 1});
                    let g = self
                        .send(
                            Method::PUT,
                            &self.entity_path(&pk, &rk),
                            "",
                            Some(&e),
                            Some(&etag),
                        )
                        .await?;
                    if matches!(g.status, 204 | 200) {
                        return Ok(true);
                    }
                }
            }
        }
        Err(err(
            "Contention",
            "the breaker counter kept changing; try again",
            true,
        ))
    }

    async fn return_slot(&self, scope: &str, hour: &str) -> Result<(), LedgerError> {
        let (pk, rk) = (key(&format!("breaker#{scope}")), key(hour));
        // Optimistic decrement on the ETag read; retry a lost race; never below zero.
        for _ in 0..20 {
            let Some((current, etag)) = self.entity(&pk, &rk).await? else {
                return Ok(());
            };
            let n = current["Count"].as_u64().unwrap_or(0);
            if n == 0 {
                return Ok(());
            }
            let e = json!({"PartitionKey": pk, "RowKey": rk, "Scope": scope, "Hour": hour, "Count": n - 1});
            let g = self
                .send(
                    Method::PUT,
                    &self.entity_path(&pk, &rk),
                    "",
                    Some(&e),
                    Some(&etag),
                )
                .await?;
            if matches!(g.status, 204 | 200) {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn slots(&self, scope: &str, hour: &str) -> Result<u32, LedgerError> {
        let (pk, rk) = (key(&format!("breaker#{scope}")), key(hour));
        Ok(self
            .entity(&pk, &rk)
            .await?
            .and_then(|(v, _)| v["Count"].as_u64())
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0))
    }

    async fn reset_slots(&self, scope: &str, hour: &str) -> Result<(), LedgerError> {
        let (pk, rk) = (key(&format!("breaker#{scope}")), key(hour));
        self.send(
            Method::DELETE,
            &self.entity_path(&pk, &rk),
            "",
            None,
            Some("*"),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_body_splits_by_characters_and_joins_back() {
        let mut e: Entry = serde_json::from_value(json!({
            "principal": "azure:user/u", "finding": "f", "scope": "azure:t", "state": "done",
            "severity": "high", "trigger": "t", "at": "2026-11-23T12:00:00Z",
            "updated": "2026-11-23T12:00:00Z", "version": 1
        }))
        .unwrap();
        e.history = (0..40)
            .map(|i| format!("{i}: {}", "é€😀".repeat(400)))
            .collect();
        let entity = TableLedger::to_entity(&e).unwrap();
        assert!(entity["Body2"].is_string(), "split across properties");
        for k in ["Body", "Body1", "Body2"] {
            let units: usize = entity[k].as_str().unwrap().encode_utf16().count();
            assert!(units * 2 <= 64 * 1024, "{k}: {units} UTF-16 units");
        }
        let back = entry_of(entity["Body"].as_str().unwrap(), &entity).unwrap();
        assert_eq!(back, e);
    }
}
