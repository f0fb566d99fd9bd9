//! quell's Azure adapter: the only crate that calls Microsoft Graph and Azure Resource Manager.

pub mod capabilities;
pub mod client;
pub mod executor;
pub mod ledger;
pub mod links;
pub mod permissions;
pub mod queue;
pub mod release;
pub mod sweep;
pub mod tls;
pub mod token;

pub use client::{AzError, Endpoints, Http};
pub use executor::AzureExecutor;
pub use ledger::{TableAuth, TableLedger};
pub use queue::VerifyQueue;
pub use token::{StaticToken, TokenSource};
