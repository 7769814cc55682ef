//! TLS for the listeners, from the files of `[tls]` (`config::TlsFiles`).
//!
//! The peer listener demands a client certificate signed by the cluster CA (mutual TLS): a
//! connection without one fails the handshake, before any HTTP, so the cluster secret is a
//! second factor behind it rather than the only one. The client listener serves HTTPS with the
//! same node certificate and asks clients for none (they authenticate with tokens). The
//! outgoing side (peers calling peers with the node certificate) is `transport::HttpTransport`.
//!
//! Crypto is rustls with its `ring` provider, chosen explicitly rather than installed as a
//! process default, so nothing depends on which other crate initialises rustls first.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// The acceptors of a node's two listeners.
pub struct Acceptors {
    /// Mutual TLS: only certificates the cluster CA signed.
    pub peer: TlsAcceptor,
    /// HTTPS without client certificates.
    pub client: TlsAcceptor,
}

pub fn acceptors(files: &TlsFiles) -> anyhow::Result<Acceptors> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(root_store(&files.ca)?);
    let chain = certificates(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the private key {}", files.key.display()))?;

    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .context("building the client-certificate verifier")?;
    let peer = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .with_context(|| format!("using {} with its key", files.cert.display()))?;
    let client = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| format!("using {} with its key", files.cert.display()))?;
    Ok(Acceptors {
        peer: TlsAcceptor::from(Arc::new(with_http1(peer))),
        client: TlsAcceptor::from(Arc::new(with_http1(client))),
    })
}

/// Both listeners speak HTTP/1.1 only.
fn with_http1(mut config: ServerConfig) -> ServerConfig {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

fn certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", path.display());
    Ok(chain)
}

fn root_store(ca: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca)? {
        roots
            .add(cert)
            .with_context(|| format!("using {} as the cluster CA", ca.display()))?;
    }
    Ok(roots)
}
