//! quell's integration tests, one binary. Shared helpers live in `harness.rs` (the
//! `quell_tests` library).

/// What moto cannot emulate (Security Hub updates, failure injection), with aws-smithy-mocks.
mod aws_mocks;
/// The AWS executor against moto: seeded IAM state, plans run, idempotence.
mod aws_moto;
/// The Azure executor against wiremock fakes of Graph and ARM.
mod azure;
/// The custom handler over real HTTP with the Functions host's exact JSON.
mod azure_handler;
/// The Table Storage ledger against Azurite.
mod azure_ledger;
/// Azure permissions as code, against infra/README.md and the Bicep.
mod azure_permissions;
/// The Azure stale-credential sweep against a paging wiremock Graph.
mod azure_sweep;
/// Hostile and broken input: a clear error, no action, no panic.
mod bad_input;
/// What the shipped binaries link (one HTTP stack, one TLS provider) and how they panic.
mod build_graph;
/// Conformance over the public corpus (QUELL_CORPUS), each file pinned.
mod corpus;
/// Every file in events/ plans to exact subjects and actions.
mod events;
/// Containing an IAM Identity Center user against moto's sso-admin and identitystore.
mod identity_center;
/// The Lambda edge against moto: containment, ledger, verify queue, hourly release.
mod lambda;
/// The ledger in DynamoDB (moto): one containment per finding under concurrency.
mod ledger;
/// One person on two clouds: link discovery, cross-cloud containment and its release.
mod links;
/// The SAM template and member role hold exactly what the code calls.
mod sam;
/// The AWS dormant-key sweep against moto with hundreds of users.
mod sweep;
