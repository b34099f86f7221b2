//! Service identity: mutual TLS between easel's services.
//!
//! Every service holds one certificate signed by the deployment's CA, naming it by a DNS
//! subject alternative name `<service>.easel.internal` (e.g. `jobs.easel.internal`). DNS names
//! rather than SPIFFE URIs, because standard WebPKI verification checks them on both sides:
//! a client verifies the server it dialled is the service it meant, whatever address it
//! used, and a server reads the caller's service from the verified client certificate.
//!
//! The verified caller travels with each request as a [`PeerService`] extension, where the
//! allow-list layer ([`crate::grpc::callers`]) reads it.

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The DNS suffix of service identities.
pub const IDENTITY_DOMAIN: &str = "easel.internal";

/// The DNS name that identifies `service` in its certificate.
pub fn identity_name(service: &str) -> String {
    format!("{service}.{IDENTITY_DOMAIN}")
}

/// The calling service, verified by its client certificate; in the request's extensions on
/// servers that require mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerService(pub Arc<str>);

/// Why a service identity could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{what} {path}: {reason}")]
    File {
        /// Which file (`CA certificate`, `certificate`, `private key`).
        what: &'static str,
        /// Its path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The certificate does not name a service under `easel.internal`.
    #[error("the certificate names no service (a DNS name like jobs.{IDENTITY_DOMAIN})")]
    NoServiceName,
    /// rustls refused the material (e.g. the key does not match the certificate).
    #[error("{0}")]
    Rustls(String),
}

/// This service's certificate, key and CA, ready for both sides of a connection.
pub struct ServiceIdentity {
    name: String,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ServiceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("ServiceIdentity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServiceIdentity {
    /// Loads the CA certificate(s), this service's certificate chain and its private key from
    /// PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<ServiceIdentity, TlsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|error| TlsError::File {
                what,
                path: path.display().to_string(),
                reason: error.to_string(),
            })
        };
        let (ca_pem, cert_pem, key_pem) = (
            read("CA certificate", ca)?,
            read("certificate", cert)?,
            read("private key", key)?,
        );
        ServiceIdentity::from_pem(&ca_pem, &cert_pem, &key_pem).map_err(|error| match error {
            TlsError::File { what, reason, .. } => TlsError::File {
                what,
                path: match what {
                    "CA certificate" => ca,
                    "certificate" => cert,
                    _ => key,
                }
                .display()
                .to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Builds the identity from PEM bytes.
    pub fn from_pem(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<ServiceIdentity, TlsError> {
        let pem_error = |what: &'static str, reason: String| TlsError::File {
            what,
            path: String::new(),
            reason,
        };
        let ca_certs = certificates(ca).map_err(|reason| pem_error("CA certificate", reason))?;
        let chain = certificates(cert).map_err(|reason| pem_error("certificate", reason))?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|error| pem_error("private key", format!("no PEM private key ({error})")))?;
        let name = service_of(&chain[0]).ok_or(TlsError::NoServiceName)?;

        let mut roots = rustls::RootCertStore::empty();
        for certificate in ca_certs {
            roots
                .add(certificate)
                .map_err(|error| pem_error("CA certificate", error.to_string()))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let rustls_error = |error: rustls::Error| TlsError::Rustls(error.to_string());

        // Servers require a client certificate from the same CA.
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|error| TlsError::Rustls(error.to_string()))?;
        let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(rustls_error)?;
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(rustls_error)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(rustls_error)?;
        // gRPC: HTTP/2 only.
        client.alpn_protocols = vec![b"h2".to_vec()];

        Ok(ServiceIdentity {
            name,
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }

    /// The service this certificate names.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The server side: requires and verifies a client certificate.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    /// The client side: presents this certificate, verifies the server's.
    pub fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }

    /// The name a client checks on the server of `service`.
    pub fn server_name(service: &str) -> Result<ServerName<'static>, TlsError> {
        ServerName::try_from(identity_name(service))
            .map_err(|error| TlsError::Rustls(format!("invalid service name {service:?}: {error}")))
    }
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| format!("invalid PEM ({error})"))?;
    if certificates.is_empty() {
        return Err("holds no PEM certificate".to_string());
    }
    Ok(certificates)
}

/// The service a (verified) certificate names: the first DNS name under `easel.internal`.
pub fn service_of(certificate: &CertificateDer<'_>) -> Option<String> {
    let parsed = webpki::EndEntityCert::try_from(certificate).ok()?;
    let suffix = format!(".{IDENTITY_DOMAIN}");
    parsed.valid_dns_names().find_map(|name| {
        name.strip_suffix(&suffix)
            .filter(|service| !service.is_empty() && !service.contains('.'))
            .map(str::to_string)
    })
}

/// The verified peer service of a server-side TLS connection.
pub(crate) fn peer_service(connection: &rustls::ServerConnection) -> Option<PeerService> {
    let certificate = connection.peer_certificates()?.first()?;
    service_of(certificate).map(|name| PeerService(Arc::from(name)))
}

#[cfg(feature = "dev-certs")]
pub mod dev {
    //! A development CA and one certificate per service, for `easel certs generate` and tests.

    use std::path::{Path, PathBuf};

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    use super::identity_name;

    /// The files of one service.
    #[derive(Clone, Debug)]
    pub struct ServiceFiles {
        /// `<service>.pem`: the certificate.
        pub cert: PathBuf,
        /// `<service>.key`: its private key (mode 0600).
        pub key: PathBuf,
    }

    /// Writes `ca.pem` (and `ca.key`, to sign more later) and `<service>.pem` /
    /// `<service>.key` for each service into `dir`. Certificates are valid for `days`.
    pub fn generate(
        dir: &Path,
        services: &[&str],
        days: u32,
    ) -> Result<Vec<(String, ServiceFiles)>, String> {
        std::fs::create_dir_all(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        let now = time::OffsetDateTime::now_utc();
        let until = now + time::Duration::days(i64::from(days));
        let ca_key = KeyPair::generate().map_err(|error| error.to_string())?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        ca.distinguished_name
            .push(DnType::CommonName, "easel development CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_before = now - time::Duration::minutes(5);
        ca.not_after = until;
        let ca_cert = ca.self_signed(&ca_key).map_err(|error| error.to_string())?;
        write(&dir.join("ca.pem"), ca_cert.pem().as_bytes(), 0o644)?;
        write(
            &dir.join("ca.key"),
            ca_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        let issuer = Issuer::new(ca, ca_key);

        let mut files = Vec::new();
        for service in services {
            let key = KeyPair::generate().map_err(|error| error.to_string())?;
            let mut params = CertificateParams::new(vec![identity_name(service)])
                .map_err(|error| error.to_string())?;
            params.distinguished_name.push(DnType::CommonName, *service);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            // One certificate for both roles: services are servers and clients of each other.
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            params.use_authority_key_identifier_extension = true;
            params.not_before = now - time::Duration::minutes(5);
            params.not_after = until;
            let cert = params
                .signed_by(&key, &issuer)
                .map_err(|error| error.to_string())?;
            let service_files = ServiceFiles {
                cert: dir.join(format!("{service}.pem")),
                key: dir.join(format!("{service}.key")),
            };
            write(&service_files.cert, cert.pem().as_bytes(), 0o644)?;
            write(&service_files.key, key.serialize_pem().as_bytes(), 0o600)?;
            files.push((service.to_string(), service_files));
        }
        Ok(files)
    }

    fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), String> {
        std::fs::write(path, contents).map_err(|error| format!("{}: {error}", path.display()))?;
        crate::transport::listener::restrict(path, mode)
            .map_err(|error| format!("{}: {error}", path.display()))
    }
}
