//! The one crypto provider of the workspace.

use std::sync::{Arc, OnceLock};

use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};

/// The one crypto provider of the workspace: aws-lc-rs (fast ECDSA and AES-GCM on x86-64).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .clone()
}

/// Installs [`provider`] as the process default. Call once at the start of every binary;
/// later calls (and calls in tests) are harmless.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The signature algorithms used to verify certificate chains and handshakes.
pub fn signature_algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms
}
