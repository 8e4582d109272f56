//! TLS of the two gRPC transports: the gateway as the CRM's client (`crm.tls_*`, towards its
//! `EventSink`) and the Gateway server (`grpc.tls_*`). Certificates and keys are PEM files,
//! read and checked here by `check-config` and read again into tonic's settings at start-up.
//!
//! rustls runs on `ring`, the process's one crypto provider. Error messages name a file and
//! what is wrong with it, never its contents (a key file is a secret).

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A certificate and its private key (`*_cert_file`, `*_key_file`): what a side presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityFiles {
    /// A PEM certificate chain, the end-entity certificate first.
    pub cert_file: PathBuf,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate.
    pub key_file: PathBuf,
}

/// How the gateway reaches the CRM over TLS (`crm.endpoint` is `https://`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// `crm.tls_ca_file`: the only CAs trusted for the CRM's certificate. `None`: the
    /// platform's roots (a private CA is never mixed with the public ones).
    pub ca_file: Option<PathBuf>,
    /// `crm.tls_cert_file` + `crm.tls_key_file`: the client certificate of mutual TLS.
    pub identity: Option<IdentityFiles>,
    /// `crm.tls_server_name`: the name sent as SNI and checked against the CRM's certificate,
    /// instead of the endpoint's host (an endpoint given as an IP address, a proxy).
    pub server_name: Option<String>,
}

/// The Gateway server's TLS (`grpc.tls_cert_file` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub identity: IdentityFiles,
    /// `grpc.tls_client_ca_file`: when set, every client must present a certificate this CA
    /// signed (mutual TLS); the handshake fails otherwise, before any rpc.
    pub client_ca_file: Option<PathBuf>,
}

/// A PEM file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    #[error("cannot read {}: {source}", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", .0.display())]
    NoCertificate(PathBuf),
    #[error("{} is not a valid PEM file", .0.display())]
    BadPem(PathBuf),
    #[error("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)", .0.display())]
    NoKey(PathBuf),
    #[error("the key in {} cannot serve the certificate in {}: {reason}", .key.display(), .cert.display())]
    KeyMismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Unreadable {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file: every section must parse and there must be at least one.
fn parse_certificates(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsFileError::BadPem(path.to_owned()))?;
    if certs.is_empty() {
        return Err(TlsFileError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// A CA bundle (one or more PEM certificates).
pub fn read_certificates(path: &Path) -> Result<Certificate, TlsFileError> {
    let pem = read(path)?;
    parse_certificates(path, &pem)?;
    Ok(Certificate::from_pem(pem))
}

/// A certificate chain and its key, checked to belong together (so that a swapped key file is
/// a configuration error, not a handshake failure on the other side).
pub fn read_identity(files: &IdentityFiles) -> Result<Identity, TlsFileError> {
    let cert_pem = read(&files.cert_file)?;
    let chain = parse_certificates(&files.cert_file, &cert_pem)?;
    let key_pem = read(&files.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| TlsFileError::NoKey(files.key_file.clone()))?;
    rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider())
        .map_err(|e| TlsFileError::KeyMismatch {
            cert: files.cert_file.clone(),
            key: files.key_file.clone(),
            reason: e.to_string(),
        })?;
    Ok(Identity::from_pem(cert_pem, key_pem))
}

/// tonic's client settings for the CRM.
pub fn client_config(tls: &ClientTls) -> Result<ClientTlsConfig, TlsFileError> {
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca_file {
        Some(ca) => config.ca_certificate(read_certificates(ca)?),
        None => config.with_native_roots(),
    };
    if let Some(identity) = &tls.identity {
        config = config.identity(read_identity(identity)?);
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    Ok(config)
}

/// tonic's server settings for the Gateway server.
pub fn server_config(tls: &ServerTls) -> Result<ServerTlsConfig, TlsFileError> {
    let mut config = ServerTlsConfig::new().identity(read_identity(&tls.identity)?);
    if let Some(ca) = &tls.client_ca_file {
        config = config
            .client_ca_root(read_certificates(ca)?)
            .client_auth_optional(false);
    }
    Ok(config)
}
