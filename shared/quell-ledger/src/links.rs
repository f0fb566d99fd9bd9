//! The cross-cloud link map, kept in the ledger beside the entries: one part per account or
//! tenant a discovery covered (`aws-<account>`, `azure-<tenant>`), each split in chunks that fit
//! a Table Storage property (64 KiB) and a DynamoDB item (400 KB).
//!
//! The map is data, not authority: whoever can write the table can write links. Planning uses
//! it to find the other side of a compromised identity; every action through a link re-reads
//! the link live before it writes (ARCHITECTURE invariant 14).

use std::collections::BTreeMap;

use quell_core::links::LinkMap;
use serde::{Deserialize, Serialize};

use crate::{Ledger, LedgerError};

/// Every document name of the link map starts with this.
pub const PREFIX: &str = "links.";
/// Characters of JSON per chunk: at most 60 KB as UTF-16, under Table Storage's 64 KiB.
const CHUNK: usize = 30_000;

#[derive(Serialize, Deserialize)]
struct Chunk {
    /// How many chunks the part has (read from chunk 0).
    n: usize,
    data: String,
}

/// A part name made safe for a document name (`[A-Za-z0-9-]`).
pub fn part_name(part: &str) -> String {
    part.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Stores one part of the map (what one account or tenant discovery found), replacing the
/// part's previous version.
pub async fn store<L: Ledger>(ledger: &L, part: &str, map: &LinkMap) -> Result<(), LedgerError> {
    let json = serde_json::to_string(map).map_err(|e| LedgerError {
        code: "Serialization".into(),
        message: e.to_string(),
        retryable: false,
    })?;
    let chars: Vec<char> = json.chars().collect();
    let pieces: Vec<String> = chars
        .chunks(CHUNK)
        .map(|c| c.iter().collect::<String>())
        .collect();
    let n = pieces.len().max(1);
    let part = part_name(part);
    // Chunk 0, which says how many there are, goes last: a reader never takes a new count with
    // old chunks it does not cover.
    for (i, data) in pieces.into_iter().enumerate().rev() {
        let body = serde_json::to_string(&Chunk { n, data }).map_err(|e| LedgerError {
            code: "Serialization".into(),
            message: e.to_string(),
            retryable: false,
        })?;
        ledger
            .put_document(&format!("{PREFIX}{part}.{i:04}"), &body)
            .await?;
    }
    Ok(())
}

/// The whole map: every part merged, dated by its oldest part (so staleness is the worst
/// part's). A part that does not read is named in `gaps`, never an error; no part at all is
/// `None`.
pub async fn load<L: Ledger>(ledger: &L) -> Result<Option<LinkMap>, LedgerError> {
    let docs = ledger.documents(PREFIX).await?;
    if docs.is_empty() {
        return Ok(None);
    }
    let mut parts: BTreeMap<String, BTreeMap<usize, Chunk>> = BTreeMap::new();
    let mut map = LinkMap::default();
    for (name, body) in docs {
        let rest = name.strip_prefix(PREFIX).unwrap_or(&name);
        let Some((part, index)) = rest.rsplit_once('.') else {
            continue;
        };
        match (index.parse::<usize>(), serde_json::from_str::<Chunk>(&body)) {
            (Ok(i), Ok(c)) => {
                parts.entry(part.to_string()).or_default().insert(i, c);
            }
            _ => map
                .gaps
                .push(format!("link map document {name} does not parse; skipped")),
        }
    }
    let mut oldest: Option<String> = None;
    for (part, chunks) in parts {
        let n = chunks.get(&0).map_or(0, |c| c.n);
        let json: Option<String> = (0..n)
            .map(|i| chunks.get(&i).map(|c| c.data.as_str()))
            .collect();
        match json.and_then(|j| serde_json::from_str::<LinkMap>(&j).ok()) {
            Some(m) => {
                if oldest.as_ref().is_none_or(|o| m.discovered_at < *o) {
                    oldest = Some(m.discovered_at.clone());
                }
                map.extend(m);
            }
            None => map.gaps.push(format!(
                "link map part {part} is incomplete or does not parse; run `quell links discover`"
            )),
        }
    }
    map.discovered_at = oldest.unwrap_or_default();
    Ok(Some(map.normalized()))
}

/// How long an edge plans with the link map it read before reading it again.
pub const REFRESH: std::time::Duration = std::time::Duration::from_secs(600);

/// The link map an edge holds (the Lambda functions, the Azure handler): read at start, then
/// again when older than [`REFRESH`], so the invocation's path pays for a read at most once per
/// period. A map that cannot be read keeps the one held.
#[derive(Default)]
pub struct LinkCache {
    held: tokio::sync::RwLock<(Option<std::sync::Arc<LinkMap>>, Option<std::time::Instant>)>,
}

impl LinkCache {
    /// A cache holding `map` as read now (tests, and a map given by file).
    pub fn with(map: LinkMap) -> LinkCache {
        LinkCache {
            held: tokio::sync::RwLock::new((
                Some(std::sync::Arc::new(map)),
                Some(std::time::Instant::now()),
            )),
        }
    }

    /// Reads the map from `ledger` now.
    pub async fn refresh<L: Ledger>(&self, ledger: &L) {
        match load(ledger).await {
            Ok(map) => {
                *self.held.write().await = (
                    map.map(std::sync::Arc::new),
                    Some(std::time::Instant::now()),
                );
            }
            Err(e) => {
                // Planning goes on with the map held (or none); the next refresh tries again.
                tracing::warn!(error = %e, "the link map could not be read; planning with the one held");
                self.held.write().await.1 = Some(std::time::Instant::now());
            }
        }
    }

    /// `base` with the link map (read again first when due), said stale when older than a
    /// day at `now_unix`.
    pub async fn context<L: Ledger>(
        &self,
        base: &quell_core::Context,
        ledger: Option<&L>,
        now_unix: i64,
    ) -> quell_core::Context {
        let due = self
            .held
            .read()
            .await
            .1
            .is_none_or(|at| at.elapsed() > REFRESH);
        if let (true, Some(l)) = (due, ledger) {
            self.refresh(l).await;
        }
        let mut ctx = base.clone();
        if let Some(map) = self.held.read().await.0.clone() {
            ctx.links_stale = map
                .age_seconds(now_unix)
                .is_none_or(|age| age > quell_core::links::STALE_AFTER_SECONDS);
            ctx.links = Some(map);
        }
        ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryLedger;
    use quell_core::links::{AwsEnd, EntraEnd, Link, LinkKind, Strength};

    fn link(i: usize) -> Link {
        Link {
            tenant: "7c1f4e2a-9b3d-4a6e-8f5c-2d1b0a9e8c7f".into(),
            entra: EntraEnd::User {
                id: None,
                upn: Some(format!("user{i}@contoso.com")),
            },
            aws: AwsEnd::Role {
                account: "111122223333".into(),
                name: format!("Role{i}"),
                provider: Some("arn:aws:iam::111122223333:saml-provider/EntraID".into()),
            },
            kind: LinkKind::SamlProvider,
            strength: Strength::Inferred,
        }
    }

    #[tokio::test]
    async fn parts_round_trip_in_chunks_and_are_dated_by_the_oldest() {
        let ledger = MemoryLedger::default();
        assert_eq!(load(&ledger).await.unwrap(), None);
        let big = LinkMap {
            discovered_at: "2026-12-04T10:00:00Z".into(),
            links: (0..400).map(link).collect(),
            gaps: vec![],
        };
        store(&ledger, "aws-111122223333", &big).await.unwrap();
        assert!(
            ledger.documents(PREFIX).await.unwrap().len() > 1,
            "split in chunks"
        );
        let small = LinkMap {
            discovered_at: "2026-12-03T10:00:00Z".into(),
            links: vec![link(1000)],
            gaps: vec![],
        };
        store(&ledger, "azure-7c1f", &small).await.unwrap();
        let map = load(&ledger).await.unwrap().unwrap();
        assert_eq!(map.links.len(), 401);
        assert_eq!(map.discovered_at, "2026-12-03T10:00:00Z");
        // A part rewritten smaller leaves no old chunk in the map.
        store(&ledger, "aws-111122223333", &small).await.unwrap();
        let map = load(&ledger).await.unwrap().unwrap();
        assert_eq!(map.links.len(), 1, "{:?}", map.gaps);
        // A broken part is a gap, not an error.
        ledger
            .put_document("links.azure-7c1f.0000", "{\"n\":2,\"data\":\"{\"}")
            .await
            .unwrap();
        let map = load(&ledger).await.unwrap().unwrap();
        assert!(map.gaps.iter().any(|g| g.contains("azure-7c1f")), "{map:?}");
    }
}
