//! quell's TLS provider for every reqwest client and azure_identity credential of this crate:
//! rustls with *ring* (the choice and its trade-off: `quell_aws::http`, docs/performance.md).
//! reqwest is built without a provider of its own, so a client built before one is installed
//! would refuse to start; every constructor here calls [`install`] first.

/// Makes *ring* the process's rustls provider, once (`Err` means one is installed already).
pub fn install() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A reqwest client builder with the provider installed.
pub fn reqwest_builder() -> reqwest::ClientBuilder {
    install();
    reqwest::Client::builder()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_builds_with_ring_as_the_provider() {
        let client = super::reqwest_builder().build();
        assert!(client.is_ok());
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
