//! The self-signed certificate a TLS-enabled local server presents.

use crate::error::LocalPgError;

/// PEM certificate and private key for CN=localhost, valid for the names
/// `localhost` and `127.0.0.1` so verify-full works with either host.
pub(crate) fn self_signed_localhost() -> Result<(String, String), LocalPgError> {
    let err = |e: rcgen::Error| LocalPgError::Cert(e.to_string());
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}
