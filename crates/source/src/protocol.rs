//! Frontend/backend protocol v3 messages without I/O: encoding of what we
//! send and decoding of the bodies of what the server sends.
//!
//! A backend message is a type byte, an int32 length that counts itself but
//! not the type byte, and the body. The COPY hot path frames messages in its
//! own buffers with [`header`]; everything else goes through the connection's
//! message reader and the `parse_*` functions here.

/// Backend message type bytes, each named after its message in the
/// protocol documentation ("Message Formats").
#[allow(missing_docs)] // The name is the message; a doc line would repeat it.
pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const NOTIFICATION_RESPONSE: u8 = b'A';
    pub const ROW_DESCRIPTION: u8 = b'T';
    pub const DATA_ROW: u8 = b'D';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const PARSE_COMPLETE: u8 = b'1';
    pub const BIND_COMPLETE: u8 = b'2';
    pub const CLOSE_COMPLETE: u8 = b'3';
    pub const PORTAL_SUSPENDED: u8 = b's';
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    pub const NO_DATA: u8 = b'n';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}

/// Bytes of a message header: type byte and int32 length.
pub const HEADER_LEN: usize = 5;

/// The largest message we accept: PostgreSQL's rows are at most 1 GB, and a
/// larger length means a corrupt stream rather than a row to buffer.
pub const MAX_MESSAGE_LEN: usize = (1 << 30) + (64 << 20);

/// A malformed message body; the connection adds host and phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolViolation(pub String);

/// Type byte and body length of the message header at the start of `buf`
/// (which must hold at least [`HEADER_LEN`] bytes).
#[inline]
pub fn header(buf: &[u8]) -> Result<(u8, usize), ProtocolViolation> {
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if !(4..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(ProtocolViolation(format!(
            "message of type {:?} has impossible length {len}",
            char::from(buf[0])
        )));
    }
    Ok((buf[0], len - 4))
}

// ---- frontend messages -------------------------------------------------

/// The 8-byte SSLRequest.
pub fn ssl_request() -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..4].copy_from_slice(&8u32.to_be_bytes());
    m[4..].copy_from_slice(&80877103u32.to_be_bytes());
    m
}

/// StartupMessage for protocol 3.0 with the given parameters.
pub fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut m = vec![0, 0, 0, 0];
    m.extend_from_slice(&196608u32.to_be_bytes());
    for (k, v) in params {
        put_cstr(&mut m, k);
        put_cstr(&mut m, v);
    }
    m.push(0);
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_be_bytes());
    m
}

/// A typed message: type byte, length, body.
fn typed(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(body.len() + HEADER_LEN);
    m.push(tag);
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// PasswordMessage (cleartext or md5 hash): the password as a C string.
pub fn password(pw: &[u8]) -> Vec<u8> {
    let mut body = pw.to_vec();
    body.push(0);
    typed(b'p', &body)
}

/// SASLInitialResponse: mechanism name and the client-first message.
pub fn sasl_initial(mechanism: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    put_cstr(&mut body, mechanism);
    body.extend_from_slice(&(data.len() as i32).to_be_bytes());
    body.extend_from_slice(data);
    typed(b'p', &body)
}

/// SASLResponse: the next client message.
pub fn sasl_response(data: &[u8]) -> Vec<u8> {
    typed(b'p', data)
}

/// Query (simple protocol).
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(sql.len() + 1);
    put_cstr(&mut body, sql);
    typed(b'Q', &body)
}

/// Parse of the unnamed statement with no parameter types, Describe of it,
/// and Sync, in one write.
pub fn parse_describe_sync(sql: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(sql.len() + 4);
    body.push(0); // unnamed statement
    put_cstr(&mut body, sql);
    body.extend_from_slice(&0i16.to_be_bytes());
    let mut m = typed(b'P', &body);
    m.extend_from_slice(&typed(b'D', b"S\0"));
    m.extend_from_slice(&typed(b'S', &[]));
    m
}

/// Wire format codes of parameters and result columns.
pub mod format {
    /// Text, as `*_out` functions print values.
    pub const TEXT: i16 = 0;
    /// Binary, as `*_send` functions write values.
    pub const BINARY: i16 = 1;
}

/// A message being built in place: type byte, length placeholder, body;
/// [`Builder::finish`] fills the length in. Large parameters (a chunk of a
/// large object) are copied once, straight into the message.
struct Builder<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> Builder<'a> {
    fn new(out: &'a mut Vec<u8>, tag: u8) -> Builder<'a> {
        let start = out.len();
        out.push(tag);
        out.extend_from_slice(&[0, 0, 0, 0]);
        Builder { out, start }
    }
    fn finish(self) -> Result<(), ProtocolViolation> {
        let len = self.out.len() - self.start - 1;
        if len > MAX_MESSAGE_LEN {
            let tag = char::from(self.out[self.start]);
            self.out.truncate(self.start);
            return Err(ProtocolViolation(format!(
                "message of type {tag:?} would be {len} bytes long, more than the {MAX_MESSAGE_LEN} allowed"
            )));
        }
        let at = self.start + 1;
        self.out[at..at + 4].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    }
}

/// Parse of a prepared statement (`name` empty: the unnamed one) with the
/// given parameter type OIDs (0 lets the server infer one).
pub fn parse(
    out: &mut Vec<u8>,
    name: &str,
    sql: &str,
    param_types: &[u32],
) -> Result<(), ProtocolViolation> {
    if param_types.len() > i16::MAX as usize {
        return Err(ProtocolViolation(format!(
            "{} parameter types, the protocol allows {}",
            param_types.len(),
            i16::MAX
        )));
    }
    let b = Builder::new(out, b'P');
    put_cstr(b.out, name);
    put_cstr(b.out, sql);
    b.out
        .extend_from_slice(&(param_types.len() as i16).to_be_bytes());
    for t in param_types {
        b.out.extend_from_slice(&t.to_be_bytes());
    }
    b.finish()
}

/// Bind of `portal` (empty: the unnamed one) to `statement` with every
/// parameter in `param_format` (`None` sends SQL NULL) and every result
/// column in `result_format`. Fails only when the message would be longer
/// than the protocol allows (nothing is appended then).
pub fn bind(
    out: &mut Vec<u8>,
    portal: &str,
    statement: &str,
    param_format: i16,
    params: &[Option<&[u8]>],
    result_format: i16,
) -> Result<(), ProtocolViolation> {
    if params.len() > i16::MAX as usize {
        return Err(ProtocolViolation(format!(
            "{} parameters, the protocol allows {}",
            params.len(),
            i16::MAX
        )));
    }
    let payload: usize = params.iter().map(|p| p.map_or(0, <[u8]>::len)).sum();
    let b = Builder::new(out, b'B');
    b.out.reserve(payload + 4 * params.len() + 32);
    put_cstr(b.out, portal);
    put_cstr(b.out, statement);
    // One format code applies to every parameter.
    b.out.extend_from_slice(&1i16.to_be_bytes());
    b.out.extend_from_slice(&param_format.to_be_bytes());
    b.out
        .extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            None => b.out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                let Ok(len) = i32::try_from(v.len()) else {
                    b.out.truncate(b.start);
                    return Err(ProtocolViolation(format!(
                        "a parameter of {} bytes is longer than the protocol allows",
                        v.len()
                    )));
                };
                b.out.extend_from_slice(&len.to_be_bytes());
                b.out.extend_from_slice(v);
            }
        }
    }
    // One format code applies to every result column.
    b.out.extend_from_slice(&1i16.to_be_bytes());
    b.out.extend_from_slice(&result_format.to_be_bytes());
    b.finish()
}

/// Execute of `portal`, all rows (`max_rows` 0) or at most `max_rows`.
pub fn execute(out: &mut Vec<u8>, portal: &str, max_rows: i32) -> Result<(), ProtocolViolation> {
    let b = Builder::new(out, b'E');
    put_cstr(b.out, portal);
    b.out.extend_from_slice(&max_rows.to_be_bytes());
    b.finish()
}

/// Sync: ends an extended-query exchange (the server answers
/// ReadyForQuery, after skipping to here on an error).
pub fn sync(out: &mut Vec<u8>) {
    // An empty body: always within the limit.
    let _ = Builder::new(out, b'S').finish();
}

/// Parse, Bind, Execute and Sync of the unnamed statement and portal in
/// one write: `sql` with binary parameters of the given types, every
/// result column in `result_format`. This is how every statement that
/// carries anything a user gave is sent: Parse takes exactly one statement,
/// so text that tries to end it and start another is a server error
/// ("cannot insert multiple commands into a prepared statement") instead
/// of a second statement.
pub fn extended_query(
    sql: &str,
    param_types: &[u32],
    params: &[Option<&[u8]>],
    result_format: i16,
) -> Result<Vec<u8>, ProtocolViolation> {
    if param_types.len() != params.len() {
        return Err(ProtocolViolation(format!(
            "{} parameter types for {} parameters",
            param_types.len(),
            params.len()
        )));
    }
    let mut m = Vec::new();
    parse(&mut m, "", sql, param_types)?;
    bind(&mut m, "", "", format::BINARY, params, result_format)?;
    execute(&mut m, "", 0)?;
    sync(&mut m);
    Ok(m)
}

/// Terminate.
pub fn terminate() -> Vec<u8> {
    typed(b'X', &[])
}

/// CancelRequest for another connection's backend (sent on a new socket).
pub fn cancel_request(pid: i32, secret: i32) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[..4].copy_from_slice(&16u32.to_be_bytes());
    m[4..8].copy_from_slice(&80877102u32.to_be_bytes());
    m[8..12].copy_from_slice(&pid.to_be_bytes());
    m[12..].copy_from_slice(&secret.to_be_bytes());
    m
}

fn put_cstr(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
}

// ---- backend message bodies ------------------------------------------------

/// A cursor over a message body.
struct Body<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Body<'a> {
    fn short(&self) -> ProtocolViolation {
        ProtocolViolation(format!("{} message is truncated", self.what))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], ProtocolViolation> {
        if self.buf.len() < n {
            return Err(self.short());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, ProtocolViolation> {
        Ok(self.bytes(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, ProtocolViolation> {
        let b = self.bytes(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, ProtocolViolation> {
        let b = self.bytes(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self) -> Result<String, ProtocolViolation> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.short())?;
        let s = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }
}

/// An Authentication request.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthRequest {
    /// Authenticated.
    Ok,
    /// Send the password as it is.
    Cleartext,
    /// Send `md5(md5(password || user) || salt)`.
    Md5 {
        /// The server's random salt.
        salt: [u8; 4],
    },
    /// Start SASL with one of these mechanisms (SCRAM-SHA-256).
    Sasl {
        /// Mechanism names, most preferred first.
        mechanisms: Vec<String>,
    },
    /// The server's next SASL message.
    SaslContinue(Vec<u8>),
    /// The server's last SASL message, with its proof.
    SaslFinal(Vec<u8>),
    /// Kerberos, GSSAPI, SSPI...: not supported.
    Other(i32),
}

/// Decodes an Authentication message's body.
pub fn parse_auth(body: &[u8]) -> Result<AuthRequest, ProtocolViolation> {
    let mut b = Body {
        buf: body,
        what: "Authentication",
    };
    Ok(match b.i32()? {
        0 => AuthRequest::Ok,
        3 => AuthRequest::Cleartext,
        5 => {
            let s = b.bytes(4)?;
            AuthRequest::Md5 {
                salt: [s[0], s[1], s[2], s[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = b.cstr()?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            AuthRequest::Sasl { mechanisms }
        }
        11 => AuthRequest::SaslContinue(b.buf.to_vec()),
        12 => AuthRequest::SaslFinal(b.buf.to_vec()),
        other => AuthRequest::Other(other),
    })
}

/// The fields of an ErrorResponse or NoticeResponse that we report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    /// `V` (untranslated, 9.6+) or `S`: ERROR, FATAL, PANIC, or for notices
    /// WARNING, NOTICE...
    pub severity: String,
    /// `C`: the SQLSTATE code.
    pub code: String,
    /// `M`: the primary message.
    pub message: String,
    /// `D`: the optional detail.
    pub detail: Option<String>,
    /// `H`: the optional hint.
    pub hint: Option<String>,
}

/// Decodes an ErrorResponse or NoticeResponse body (the fields above; the
/// others are skipped).
pub fn parse_error(body: &[u8]) -> Result<ErrorFields, ProtocolViolation> {
    let mut b = Body {
        buf: body,
        what: "ErrorResponse",
    };
    let mut f = ErrorFields::default();
    loop {
        let t = b.u8()?;
        if t == 0 {
            break;
        }
        let v = b.cstr()?;
        match t {
            // 'V' is the untranslated severity (9.6+); prefer it.
            b'V' => f.severity = v,
            b'S' if f.severity.is_empty() => f.severity = v,
            b'C' => f.code = v,
            b'M' => f.message = v,
            b'D' => f.detail = Some(v),
            b'H' => f.hint = Some(v),
            _ => {}
        }
    }
    Ok(f)
}

/// ParameterStatus: name and value.
pub fn parse_parameter_status(body: &[u8]) -> Result<(String, String), ProtocolViolation> {
    let mut b = Body {
        buf: body,
        what: "ParameterStatus",
    };
    Ok((b.cstr()?, b.cstr()?))
}

/// BackendKeyData: process id and secret key.
pub fn parse_backend_key(body: &[u8]) -> Result<(i32, i32), ProtocolViolation> {
    let mut b = Body {
        buf: body,
        what: "BackendKeyData",
    };
    Ok((b.i32()?, b.i32()?))
}

/// One field of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldDescription {
    /// The column's name as the query labels it.
    pub name: String,
    /// The table it comes from, or 0 for an expression.
    pub table_oid: u32,
    /// Its attribute number in that table, or 0.
    pub column_attnum: i16,
    /// OID of its type.
    pub type_oid: u32,
    /// `typlen` of the type (negative for variable width).
    pub type_size: i16,
    /// The type modifier (e.g. numeric precision and scale), or -1.
    pub typmod: i32,
    /// Format code of the values: [`format::TEXT`] or [`format::BINARY`].
    pub format: i16,
}

/// Decodes a RowDescription body.
pub fn parse_row_description(body: &[u8]) -> Result<Vec<FieldDescription>, ProtocolViolation> {
    let mut b = Body {
        buf: body,
        what: "RowDescription",
    };
    let n = b.i16()?;
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        out.push(FieldDescription {
            name: b.cstr()?,
            table_oid: b.i32()? as u32,
            column_attnum: b.i16()?,
            type_oid: b.i32()? as u32,
            type_size: b.i16()?,
            typmod: b.i32()?,
            format: b.i16()?,
        });
    }
    Ok(out)
}

/// DataRow of the simple protocol: text values, `None` for NULL.
pub fn parse_data_row(body: &[u8]) -> Result<Vec<Option<String>>, ProtocolViolation> {
    Ok(parse_data_row_raw(body)?
        .into_iter()
        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
        .collect())
}

/// DataRow with binary (or any) values as byte slices of `body`, `None`
/// for NULL: nothing is copied.
pub fn parse_data_row_raw(body: &[u8]) -> Result<Vec<Option<&[u8]>>, ProtocolViolation> {
    let mut b = Body {
        buf: body,
        what: "DataRow",
    };
    let n = b.i16()?;
    let mut out = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        let len = b.i32()?;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(b.bytes(len as usize)?));
        }
    }
    if !b.buf.is_empty() {
        return Err(ProtocolViolation(format!(
            "DataRow has {} bytes after its {n} values",
            b.buf.len()
        )));
    }
    Ok(out)
}

/// ReadyForQuery: the transaction status (`I` idle, `T` in a transaction
/// block, `E` in a failed one).
pub fn parse_ready_for_query(body: &[u8]) -> Result<u8, ProtocolViolation> {
    match body {
        [s @ (b'I' | b'T' | b'E')] => Ok(*s),
        _ => Err(ProtocolViolation(format!(
            "ReadyForQuery with an unknown transaction status {body:?}"
        ))),
    }
}

/// CopyOutResponse: whether the overall format is binary (1) and the
/// per-column formats.
pub fn parse_copy_out_response(body: &[u8]) -> Result<(i8, Vec<i16>), ProtocolViolation> {
    let mut b = Body {
        buf: body,
        what: "CopyOutResponse",
    };
    let overall = b.u8()? as i8;
    let n = b.i16()?;
    let mut cols = Vec::with_capacity(n.max(0) as usize);
    for _ in 0..n {
        cols.push(b.i16()?);
    }
    Ok((overall, cols))
}

/// server_version ("15.18 (Debian ...)", "9.6.24", "17beta1") as
/// server_version_num (150018, 90624, 170000).
pub fn parse_server_version(v: &str) -> Option<u32> {
    let digits_end = |s: &str| s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let mut parts = v.trim().split('.');
    let first = parts.next()?;
    let major: u32 = first[..digits_end(first)].parse().ok()?;
    let mut next = || -> u32 {
        parts
            .next()
            .and_then(|p| p[..digits_end(p)].parse().ok())
            .unwrap_or(0)
    };
    if major >= 10 {
        Some(major * 10000 + next())
    } else {
        let minor = next();
        let patch = next();
        Some(major * 10000 + minor * 100 + patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_layout() {
        let m = startup(&[("user", "u")]);
        assert_eq!(&m[..4], &(m.len() as u32).to_be_bytes());
        assert_eq!(&m[4..8], &[0, 3, 0, 0]);
        assert_eq!(&m[8..], b"user\0u\0\0");
    }

    #[test]
    fn query_and_extended_messages() {
        assert_eq!(query("SELECT 1"), b"Q\0\0\0\x0dSELECT 1\0");
        let m = parse_describe_sync("S");
        assert_eq!(&m[..1], b"P");
        assert!(m.ends_with(b"D\0\0\0\x06S\0S\0\0\0\x04"));
    }

    #[test]
    fn header_rejects_impossible_lengths() {
        assert_eq!(header(b"d\0\0\0\x08xxxx").unwrap(), (b'd', 4));
        assert!(header(b"d\0\0\0\x03").is_err());
        assert!(header(b"d\xff\xff\xff\xff").is_err());
    }

    #[test]
    fn error_fields() {
        let body = b"SERROR\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0P15\0\0";
        let f = parse_error(body).unwrap();
        assert_eq!(f.code, "42P01");
        assert_eq!(f.severity, "ERROR");
        assert_eq!(f.message, "relation \"x\" does not exist");
        assert!(parse_error(b"C42").is_err());
    }

    #[test]
    fn auth_requests() {
        assert_eq!(parse_auth(&[0, 0, 0, 0]).unwrap(), AuthRequest::Ok);
        assert_eq!(
            parse_auth(&[0, 0, 0, 5, 1, 2, 3, 4]).unwrap(),
            AuthRequest::Md5 { salt: [1, 2, 3, 4] }
        );
        let mut sasl = vec![0, 0, 0, 10];
        sasl.extend_from_slice(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0");
        assert_eq!(
            parse_auth(&sasl).unwrap(),
            AuthRequest::Sasl {
                mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()]
            }
        );
        assert!(parse_auth(&[0, 0, 0, 5, 1]).is_err());
    }

    #[test]
    fn data_rows_and_descriptions() {
        let mut body = vec![0, 2];
        body.extend_from_slice(&2i32.to_be_bytes());
        body.extend_from_slice(b"hi");
        body.extend_from_slice(&(-1i32).to_be_bytes());
        assert_eq!(
            parse_data_row(&body).unwrap(),
            vec![Some("hi".to_string()), None]
        );
        let mut rd = vec![0, 1];
        rd.extend_from_slice(b"id\0");
        rd.extend_from_slice(&16384u32.to_be_bytes());
        rd.extend_from_slice(&1i16.to_be_bytes());
        rd.extend_from_slice(&23u32.to_be_bytes());
        rd.extend_from_slice(&4i16.to_be_bytes());
        rd.extend_from_slice(&(-1i32).to_be_bytes());
        rd.extend_from_slice(&0i16.to_be_bytes());
        let f = parse_row_description(&rd).unwrap();
        assert_eq!(f[0].name, "id");
        assert_eq!(
            (f[0].table_oid, f[0].column_attnum, f[0].type_oid),
            (16384, 1, 23)
        );
    }

    #[test]
    fn parse_message_layout() {
        let mut m = Vec::new();
        parse(&mut m, "", "SELECT $1", &[26, 20]).unwrap();
        let mut want = vec![b'P'];
        want.extend_from_slice(&(4 + 1 + 10 + 2 + 8u32).to_be_bytes());
        want.extend_from_slice(b"\0SELECT $1\0");
        want.extend_from_slice(&[0, 2, 0, 0, 0, 26, 0, 0, 0, 20]);
        assert_eq!(m, want);
        assert_eq!(header(&m).unwrap(), (b'P', m.len() - HEADER_LEN));
    }

    #[test]
    fn bind_message_layout() {
        let mut m = Vec::new();
        bind(
            &mut m,
            "",
            "",
            format::BINARY,
            &[Some(&[0, 0, 0x40, 0x01]), None, Some(b"")],
            format::BINARY,
        )
        .unwrap();
        let mut body = Vec::new();
        body.extend_from_slice(b"\0\0"); // portal, statement
        body.extend_from_slice(&[0, 1, 0, 1]); // one format code: binary
        body.extend_from_slice(&[0, 3]); // three values
        body.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0x40, 0x01]);
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // NULL
        body.extend_from_slice(&[0, 0, 0, 0]); // empty, not NULL
        body.extend_from_slice(&[0, 1, 0, 1]); // results: binary
        let mut want = vec![b'B'];
        want.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        want.extend_from_slice(&body);
        assert_eq!(m, want);
        // Appends after what is there.
        let mut two = b"xy".to_vec();
        bind(&mut two, "p", "s", format::TEXT, &[], format::TEXT).unwrap();
        assert_eq!(&two[..3], b"xyB");
        assert_eq!(&two[7..], b"p\0s\0\0\x01\0\0\0\0\0\x01\0\0");
    }

    #[test]
    fn execute_sync_and_the_whole_exchange() {
        let mut m = Vec::new();
        execute(&mut m, "", 0).unwrap();
        sync(&mut m);
        assert_eq!(m, b"E\0\0\0\x09\0\0\0\0\0S\0\0\0\x04");
        let data = vec![7u8; 100_000];
        let all = extended_query(
            "SELECT lo_put($1, $2, $3)",
            &[26, 20, 17],
            &[
                Some(&16385u32.to_be_bytes()),
                Some(&5i64.to_be_bytes()),
                Some(&data),
            ],
            format::BINARY,
        )
        .unwrap();
        // Four messages, each framed by its own length.
        let mut tags = Vec::new();
        let mut at = 0;
        while at < all.len() {
            let (t, len) = header(&all[at..]).unwrap();
            tags.push(t);
            at += HEADER_LEN + len;
        }
        assert_eq!(at, all.len());
        assert_eq!(tags, b"PBES");
        // The bytea went in as it is, not as hex text.
        assert!(all.windows(4).any(|w| w == [0, 1, 0x86, 0xa0]));
        assert_eq!(all.iter().filter(|&&b| b == 7).count(), 100_000);
        assert!(extended_query("SELECT $1", &[23], &[], format::TEXT).is_err());
    }

    #[test]
    fn data_row_raw_and_ready_for_query() {
        let mut body = vec![0, 3];
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(&[0, 0xff, 1]);
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        let row = parse_data_row_raw(&body).unwrap();
        assert_eq!(row, vec![Some(&[0u8, 0xff, 1][..]), None, Some(&[][..])]);
        // Truncated values and trailing garbage are violations.
        assert!(parse_data_row_raw(&body[..body.len() - 5]).is_err());
        let mut long = body.clone();
        long.push(9);
        assert!(parse_data_row_raw(&long).is_err());
        let mut lying = vec![0, 1];
        lying.extend_from_slice(&100i32.to_be_bytes());
        lying.extend_from_slice(&[1, 2]);
        assert!(parse_data_row_raw(&lying).is_err());
        assert_eq!(parse_ready_for_query(b"T").unwrap(), b'T');
        assert_eq!(parse_ready_for_query(b"E").unwrap(), b'E');
        assert!(parse_ready_for_query(b"").is_err());
        assert!(parse_ready_for_query(b"X").is_err());
    }

    #[test]
    fn server_versions() {
        assert_eq!(
            parse_server_version("15.18 (Debian 15.18-1.pgdg120+1)"),
            Some(150018)
        );
        assert_eq!(parse_server_version("9.6.24"), Some(90624));
        assert_eq!(parse_server_version("17beta1"), Some(170000));
        assert_eq!(parse_server_version("x"), None);
    }
}
