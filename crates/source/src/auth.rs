//! The authentication exchange after the StartupMessage: trust, cleartext,
//! md5 and SCRAM-SHA-256 (without channel binding).

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use crate::conn::Connection;
use crate::dsn::ConnectConfig;
use crate::error::SourceError;
use crate::pgpass::Password;
use crate::protocol::{self, tag, AuthRequest};

const DURING: &str = "authenticating";
const SCRAM: &str = "SCRAM-SHA-256";
/// SQLSTATE of a wrong password.
const INVALID_PASSWORD: &str = "28P01";

/// Answers the server's authentication requests until AuthenticationOk.
pub(crate) fn authenticate(conn: &mut Connection, cfg: &ConnectConfig) -> Result<(), SourceError> {
    let auth_err = |message: String| SourceError::Auth {
        host: cfg.endpoint(),
        user: cfg.user.clone(),
        message,
    };
    // Found on the first request: a trusted connection never reads the
    // password file.
    let mut found: Option<Password> = None;
    let mut scram: Option<ScramSha256> = None;
    loop {
        let msg = conn.next_message(DURING)?;
        match msg.tag {
            tag::AUTHENTICATION => {
                let req = protocol::parse_auth(&msg.body).map_err(|v| conn.violation(DURING, v))?;
                match req {
                    AuthRequest::Ok => return Ok(()),
                    AuthRequest::Cleartext => {
                        let password = password(&mut found, cfg).map_err(auth_err)?;
                        conn.send(&protocol::password(password.as_bytes()), DURING)?;
                    }
                    AuthRequest::Md5 { salt } => {
                        let password = password(&mut found, cfg).map_err(auth_err)?;
                        let hash = md5_hash(cfg.user.as_bytes(), password.as_bytes(), salt);
                        conn.send(&protocol::password(hash.as_bytes()), DURING)?;
                    }
                    AuthRequest::Sasl { mechanisms } => {
                        if !mechanisms.iter().any(|m| m == SCRAM) {
                            return Err(auth_err(format!(
                                "the server offers only SASL mechanisms {mechanisms:?}; {SCRAM} is supported"
                            )));
                        }
                        // SASLprep of the password happens inside ScramSha256.
                        let password = password(&mut found, cfg).map_err(auth_err)?;
                        let s =
                            ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                        conn.send(&protocol::sasl_initial(SCRAM, s.message()), DURING)?;
                        scram = Some(s);
                    }
                    AuthRequest::SaslContinue(data) => {
                        let s = scram.as_mut().ok_or_else(|| {
                            conn.protocol_error(DURING, "SASL continue before SASL start")
                        })?;
                        s.update(&data)
                            .map_err(|e| auth_err(format!("SCRAM exchange failed: {e}")))?;
                        conn.send(&protocol::sasl_response(s.message()), DURING)?;
                    }
                    AuthRequest::SaslFinal(data) => {
                        let s = scram.as_mut().ok_or_else(|| {
                            conn.protocol_error(DURING, "SASL final before SASL start")
                        })?;
                        // Verifies the server's signature: the server knows
                        // the password too, so it is not an impostor.
                        s.finish(&data).map_err(|e| {
                            auth_err(format!("server's SCRAM signature is invalid: {e}"))
                        })?;
                    }
                    AuthRequest::Other(code) => {
                        return Err(auth_err(format!(
                            "the server asks for an unsupported authentication method (code {code}); trust, password, md5 and scram-sha-256 are supported"
                        )));
                    }
                }
            }
            tag::ERROR_RESPONSE => {
                let f = protocol::parse_error(&msg.body).map_err(|v| conn.violation(DURING, v))?;
                // Class 28 is invalid authorization (bad password, no
                // pg_hba.conf entry); anything else is a plain server error.
                if f.code.starts_with("28") {
                    // As libpq, say where a rejected password came from.
                    let origin = match found.as_ref().and_then(Password::origin) {
                        Some(o) if f.code == INVALID_PASSWORD => format!("; {o}"),
                        _ => String::new(),
                    };
                    return Err(auth_err(format!(
                        "{} (SQLSTATE {}){origin}",
                        f.message, f.code
                    )));
                }
                return Err(conn.server_error(f, DURING.to_string()));
            }
            other => {
                return Err(conn.protocol_error(
                    DURING,
                    &format!("unexpected message {:?}", char::from(other)),
                ))
            }
        }
    }
}

/// The connection's password, looked for on the first call.
fn password<'a>(found: &'a mut Option<Password>, cfg: &ConnectConfig) -> Result<&'a str, String> {
    found.get_or_insert_with(|| Password::find(cfg)).value()
}
