//! TLS with rustls after the server accepted an SSLRequest, with libpq's
//! meaning of each sslmode: `prefer`/`require` encrypt without checking the
//! certificate, `verify-ca` checks the chain but not the host name,
//! `verify-full` checks both.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};

use crate::dsn::{ConnectConfig, Host, SslMode};
use crate::error::SourceError;

/// Runs the TLS handshake over `sock` and returns the encrypted stream.
pub(crate) fn handshake<S: Read + Write>(
    mut sock: S,
    cfg: &ConnectConfig,
) -> Result<StreamOwned<ClientConnection, S>, SourceError> {
    let endpoint = cfg.endpoint();
    let tls_err = |message: String| SourceError::Tls {
        host: endpoint.clone(),
        message,
    };
    let config = client_config(cfg).map_err(tls_err)?;
    let host = match &cfg.host {
        Host::Tcp(h) => h.clone(),
        Host::Unix(_) => return Err(tls_err("TLS over a Unix socket is not possible".into())),
    };
    let name = match host.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.clone())
            .map_err(|e| tls_err(format!("\"{host}\" is not a valid TLS server name: {e}")))?,
    };
    let mut conn =
        ClientConnection::new(config, name).map_err(|e| tls_err(format!("setting up TLS: {e}")))?;
    // Finish the handshake now so certificate problems surface here as TLS
    // errors rather than as a failed first read later.
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| tls_err(format!("handshake failed: {e}")))?;
    }
    Ok(StreamOwned::new(conn, sock))
}

fn client_config(cfg: &ConnectConfig) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let mut config = match cfg.sslmode {
        SslMode::Disable | SslMode::Allow | SslMode::Prefer | SslMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoCertCheck { provider }))
            .with_no_client_auth(),
        SslMode::VerifyCa => {
            let roots = root_store(cfg.sslrootcert.as_deref(), true)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly { provider, roots }))
                .with_no_client_auth()
        }
        SslMode::VerifyFull => {
            let roots = root_store(cfg.sslrootcert.as_deref(), false)?;
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("building the certificate verifier: {e}"))?;
            builder.with_webpki_verifier(verifier).with_no_client_auth()
        }
    };
    // PostgreSQL 17 checks ALPN when the client sends it; older servers
    // ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(Arc::new(config))
}

/// Roots from `sslrootcert`, else libpq's `~/.postgresql/root.crt`, else
/// (verify-full only) the system's roots or the bundled Mozilla roots.
fn root_store(sslrootcert: Option<&Path>, need_file: bool) -> Result<RootCertStore, String> {
    let default_file = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
        .filter(|p| p.is_file());
    let mut roots = RootCertStore::empty();
    if let Some(path) = sslrootcert.map(Path::to_path_buf).or(default_file) {
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(|e| format!("reading sslrootcert {}: {e}", path.display()))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("parsing sslrootcert {}: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
        }
        if roots.is_empty() {
            return Err(format!(
                "sslrootcert {} holds no certificate",
                path.display()
            ));
        }
        return Ok(roots);
    }
    if need_file {
        return Err(
            "sslmode=verify-ca needs sslrootcert (or ~/.postgresql/root.crt) naming the CA certificate"
                .to_string(),
        );
    }
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    Ok(roots)
}

/// `require`/`prefer`: encrypt, accept any certificate (as libpq does), but
/// still check that the server holds the certificate's key.
#[derive(Debug)]
struct NoCertCheck {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to one of the roots; the host name is
/// not checked.
#[derive(Debug)]
struct ChainOnly {
    provider: Arc<CryptoProvider>,
    roots: RootCertStore,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
