//! An in-memory [`Ledger`], with the same conditional semantics as the real ones: for unit tests
//! and dry runs of the ledger logic. Not durable.

use std::collections::BTreeMap;

use tokio::sync::Mutex;

use crate::{Entry, Ledger, LedgerError};

#[derive(Default)]
pub struct MemoryLedger {
    entries: Mutex<BTreeMap<(String, String), Entry>>,
    slots: Mutex<BTreeMap<(String, String), u32>>,
    documents: Mutex<BTreeMap<String, String>>,
}

impl Ledger for MemoryLedger {
    async fn put_document(&self, name: &str, body: &str) -> Result<(), LedgerError> {
        self.documents
            .lock()
            .await
            .insert(name.to_string(), body.to_string());
        Ok(())
    }
    async fn documents(&self, prefix: &str) -> Result<Vec<(String, String)>, LedgerError> {
        Ok(self
            .documents
            .lock()
            .await
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    async fn get(&self, principal: &str, finding: &str) -> Result<Option<Entry>, LedgerError> {
        Ok(self
            .entries
            .lock()
            .await
            .get(&(principal.to_string(), finding.to_string()))
            .cloned())
    }
    async fn put(&self, entry: &Entry, expected: Option<u64>) -> Result<bool, LedgerError> {
        let mut m = self.entries.lock().await;
        let key = (entry.principal.clone(), entry.finding.clone());
        if m.get(&key).map(|e| e.version) != expected {
            return Ok(false);
        }
        m.insert(key, entry.clone());
        Ok(true)
    }
    async fn delete(
        &self,
        principal: &str,
        finding: &str,
        expected: u64,
    ) -> Result<bool, LedgerError> {
        let mut m = self.entries.lock().await;
        let key = (principal.to_string(), finding.to_string());
        if m.get(&key).map(|e| e.version) != Some(expected) {
            return Ok(false);
        }
        m.remove(&key);
        Ok(true)
    }
    async fn list(&self, principal: Option<&str>) -> Result<Vec<Entry>, LedgerError> {
        Ok(self
            .entries
            .lock()
            .await
            .values()
            .filter(|e| principal.is_none_or(|p| e.principal == p))
            .cloned()
            .collect())
    }
    async fn by_finding(&self, finding: &str) -> Result<Vec<Entry>, LedgerError> {
        Ok(self
            .entries
            .lock()
            .await
            .values()
            .filter(|e| e.finding == finding)
            .cloned()
            .collect())
    }
    async fn take_slot(&self, scope: &str, hour: &str, cap: u32) -> Result<bool, LedgerError> {
        let mut m = self.slots.lock().await;
        let n = m.entry((scope.to_string(), hour.to_string())).or_insert(0);
        if *n >= cap {
            return Ok(false);
        }
        *n += 1;
        Ok(true)
    }
    async fn slots(&self, scope: &str, hour: &str) -> Result<u32, LedgerError> {
        Ok(*self
            .slots
            .lock()
            .await
            .get(&(scope.to_string(), hour.to_string()))
            .unwrap_or(&0))
    }
    async fn return_slot(&self, scope: &str, hour: &str) -> Result<(), LedgerError> {
        if let Some(n) = self
            .slots
            .lock()
            .await
            .get_mut(&(scope.to_string(), hour.to_string()))
        {
            *n = n.saturating_sub(1);
        }
        Ok(())
    }
    async fn reset_slots(&self, scope: &str, hour: &str) -> Result<(), LedgerError> {
        self.slots
            .lock()
            .await
            .remove(&(scope.to_string(), hour.to_string()));
        Ok(())
    }
}
