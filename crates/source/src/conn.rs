//! One blocking connection to a PostgreSQL server: socket (TCP, Unix, TLS),
//! startup, the simple and extended query exchanges we need, and the
//! message reader shared with the COPY reader.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use rustls::{ClientConnection, StreamOwned};

use crate::auth::authenticate;
use crate::dsn::{ConnectConfig, Host, SslMode};
use crate::error::SourceError;
use crate::protocol::{self, tag, ErrorFields, ProtocolViolation, HEADER_LEN};
use crate::timeout::{connect_unix, Watchdog};
use crate::tls;

/// Size of the buffer of the message reader (the COPY reader reads into its
/// own large buffers instead).
const READ_BUF: usize = 64 * 1024;

/// A plain socket.
#[derive(Debug)]
pub(crate) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    pub(crate) fn try_clone(&self) -> io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
        })
    }

    /// Ends both directions: blocked reads and writes of every clone
    /// return at once.
    pub(crate) fn shutdown(&self) {
        // Fails only if the socket is already closed, which is the aim.
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Both),
            Socket::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.flush(),
            Socket::Unix(s) => s.flush(),
        }
    }
}

/// The byte stream of a connection, encrypted or not.
pub(crate) enum Stream {
    Plain(Socket),
    Tls(Box<StreamOwned<ClientConnection, Socket>>),
}

impl Read for Stream {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// A backend message read by the message reader.
#[derive(Debug)]
pub(crate) struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

/// A result column as the extended protocol's Describe reports it: name,
/// type OID, typmod, table OID (0 if not a plain column), column attnum.
pub type DescribedColumn = (String, u32, i32, u32, i16);

/// Rows of [`Connection::query_binary`]: every value in its type's binary
/// format, `None` for NULL.
pub type BinaryRows = Vec<Vec<Option<Vec<u8>>>>;

/// A parameter of [`Connection::query_binary`]: its type OID and its value
/// in the type's binary format (`None` sends NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param<'a> {
    /// The parameter's type, or 0 to let the server infer it.
    pub type_oid: u32,
    /// The value in binary format, or `None` for NULL.
    pub value: Option<Cow<'a, [u8]>>,
}

impl<'a> Param<'a> {
    /// `bytea`'s type OID (these four are the types of the constructors below).
    pub const BYTEA: u32 = 17;
    /// `bigint`'s type OID.
    pub const INT8: u32 = 20;
    /// `integer`'s type OID.
    pub const INT4: u32 = 23;
    /// `oid`'s type OID.
    pub const OID: u32 = 26;

    /// A value whose type the server infers from the statement (type OID
    /// 0), sent as the UTF-8 bytes of `v`: the binary format of `text`,
    /// `name` and `cstring` alike, so `pg_catalog.to_regclass($1)` takes it
    /// whichever of those its argument is in the server's version.
    pub fn untyped_text(v: &'a str) -> Param<'a> {
        Param {
            type_oid: 0,
            value: Some(Cow::Borrowed(v.as_bytes())),
        }
    }

    /// An `oid` (big-endian u32).
    pub fn oid(v: u32) -> Param<'static> {
        Param {
            type_oid: Self::OID,
            value: Some(Cow::Owned(v.to_be_bytes().to_vec())),
        }
    }

    /// An `int4`.
    pub fn int4(v: i32) -> Param<'static> {
        Param {
            type_oid: Self::INT4,
            value: Some(Cow::Owned(v.to_be_bytes().to_vec())),
        }
    }

    /// An `int8`.
    pub fn int8(v: i64) -> Param<'static> {
        Param {
            type_oid: Self::INT8,
            value: Some(Cow::Owned(v.to_be_bytes().to_vec())),
        }
    }

    /// A `bytea`: the bytes themselves, borrowed (no hex text).
    pub fn bytea(v: &'a [u8]) -> Param<'a> {
        Param {
            type_oid: Self::BYTEA,
            value: Some(Cow::Borrowed(v)),
        }
    }

    /// SQL NULL of type `type_oid`.
    pub fn null(type_oid: u32) -> Param<'static> {
        Param {
            type_oid,
            value: None,
        }
    }
}

/// A session with one server. Not thread-safe by design: each COPY worker
/// owns its connection.
pub struct Connection {
    pub(crate) stream: Stream,
    /// Bytes received but not yet consumed are `rbuf[rstart..rend]`.
    pub(crate) rbuf: Vec<u8>,
    pub(crate) rstart: usize,
    pub(crate) rend: usize,
    endpoint: String,
    params: HashMap<String, String>,
    backend_pid: i32,
    /// BackendKeyData's key: with the PID it lets a CancelRequest stop
    /// this session's statement (crate::cancel).
    pub(crate) secret_key: i32,
    server_version_num: u32,
    tls: bool,
    /// Set when the session is out of step with the server (e.g. a COPY
    /// abandoned half-way); every later call fails with `Broken`.
    pub(crate) broken: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .field("backend_pid", &self.backend_pid)
            .field("server_version_num", &self.server_version_num)
            .field("tls", &self.tls)
            .field("broken", &self.broken)
            .finish()
    }
}

/// Whether this attempt negotiates TLS.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TlsWanted {
    No,
    IfOffered,
    Required,
}

impl Connection {
    /// Opens a session: socket, TLS per `sslmode`, startup, authentication.
    pub fn connect(cfg: &ConnectConfig) -> Result<Connection, SourceError> {
        let unix = matches!(cfg.host, Host::Unix(_));
        // libpq ignores sslmode on Unix sockets: they cannot carry TLS.
        let wanted = match cfg.sslmode {
            _ if unix => TlsWanted::No,
            SslMode::Disable | SslMode::Allow => TlsWanted::No,
            SslMode::Prefer => TlsWanted::IfOffered,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => TlsWanted::Required,
        };
        match Self::connect_once(cfg, wanted) {
            // allow: plaintext first, TLS if the server refused plaintext.
            Err(SourceError::Auth { .. } | SourceError::Server { .. })
                if cfg.sslmode == SslMode::Allow && !unix =>
            {
                Self::connect_once(cfg, TlsWanted::Required)
            }
            other => other,
        }
    }

    /// One attempt, bounded by `connect_timeout` when there is one.
    fn connect_once(cfg: &ConnectConfig, wanted: TlsWanted) -> Result<Connection, SourceError> {
        let Some(limit) = cfg.connect_timeout else {
            return Self::start_session(open_socket(cfg, None)?, cfg, wanted);
        };
        let deadline = Instant::now() + limit;
        let timed_out = |during: &str| SourceError::ConnectTimeout {
            host: cfg.endpoint(),
            seconds: limit.as_secs(),
            during: during.to_string(),
        };
        let socket = match open_socket(cfg, Some(deadline)) {
            Err(SourceError::Connect { source, .. })
                if source.kind() == io::ErrorKind::TimedOut =>
            {
                return Err(timed_out("opening the connection"))
            }
            other => other?,
        };
        let watchdog = socket
            .try_clone()
            .and_then(|s| Watchdog::arm(s, deadline))
            .map_err(|source| SourceError::Connect {
                host: cfg.endpoint(),
                source,
            })?;
        let result = Self::start_session(socket, cfg, wanted);
        if watchdog.disarm() {
            // The socket was shut down under the startup, whatever it was
            // doing: report that, not the error the shutdown caused.
            return Err(timed_out(&phase_of(&result)));
        }
        result
    }

    /// TLS per `wanted`, startup and authentication on an open socket.
    fn start_session(
        mut socket: Socket,
        cfg: &ConnectConfig,
        wanted: TlsWanted,
    ) -> Result<Connection, SourceError> {
        let endpoint = cfg.endpoint();
        let lost = |during: &str, e: io::Error| SourceError::ConnectionLost {
            host: endpoint.clone(),
            during: during.to_string(),
            reason: e.to_string(),
        };
        let stream = if wanted == TlsWanted::No {
            Stream::Plain(socket)
        } else {
            socket
                .write_all(&protocol::ssl_request())
                .map_err(|e| lost("sending SSLRequest", e))?;
            // Read exactly one byte: anything buffered beyond it would be
            // unauthenticated plaintext injected before the handshake.
            let mut answer = [0u8; 1];
            socket
                .read_exact(&mut answer)
                .map_err(|e| lost("waiting for the SSLRequest answer", e))?;
            match answer[0] {
                b'S' => Stream::Tls(Box::new(tls::handshake(socket, cfg)?)),
                b'N' if wanted == TlsWanted::IfOffered => Stream::Plain(socket),
                b'N' => {
                    return Err(SourceError::Tls {
                        host: endpoint,
                        message: format!(
                        "the server does not accept TLS connections, but sslmode={} requires TLS",
                        cfg.sslmode.as_str()
                    ),
                    })
                }
                other => {
                    return Err(SourceError::Protocol {
                        host: endpoint,
                        during: "negotiating TLS".into(),
                        message: format!("unexpected answer {other:#04x} to SSLRequest"),
                    })
                }
            }
        };
        let tls = matches!(stream, Stream::Tls(_));
        let mut conn = Connection {
            stream,
            rbuf: vec![0; READ_BUF],
            rstart: 0,
            rend: 0,
            endpoint,
            params: HashMap::new(),
            backend_pid: 0,
            secret_key: 0,
            server_version_num: 0,
            tls,
            broken: false,
        };

        let mut params: Vec<(&str, &str)> = vec![
            ("user", &cfg.user),
            ("database", &cfg.dbname),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO"),
            ("application_name", &cfg.application_name),
            ("extra_float_digits", "3"),
        ];
        if let Some(o) = &cfg.options {
            params.push(("options", o));
        }
        conn.send(&protocol::startup(&params), "sending the startup message")?;
        authenticate(&mut conn, cfg)?;
        conn.finish_startup()?;
        Ok(conn)
    }

    /// After AuthenticationOk: parameters and key data up to ReadyForQuery.
    fn finish_startup(&mut self) -> Result<(), SourceError> {
        const DURING: &str = "starting the session";
        loop {
            let msg = self.next_message(DURING)?;
            match msg.tag {
                tag::BACKEND_KEY_DATA => {
                    let (pid, key) = protocol::parse_backend_key(&msg.body)
                        .map_err(|v| self.violation(DURING, v))?;
                    self.backend_pid = pid;
                    self.secret_key = key;
                }
                tag::READY_FOR_QUERY => break,
                tag::ERROR_RESPONSE => {
                    let f =
                        protocol::parse_error(&msg.body).map_err(|v| self.violation(DURING, v))?;
                    return Err(self.server_error(f, DURING.to_string()));
                }
                // We request no protocol extensions, so a downgrade notice
                // changes nothing for us.
                tag::NEGOTIATE_PROTOCOL_VERSION => {}
                other => {
                    return Err(self.protocol_error(
                        DURING,
                        &format!("unexpected message {:?}", char::from(other)),
                    ))
                }
            }
        }
        // Binary timestamps are int64 microseconds only with
        // integer_datetimes; the float format (removed in PostgreSQL 10) is
        // not decoded.
        if let Some(v) = self.params.get("integer_datetimes") {
            if v != "on" {
                return Err(SourceError::UnsupportedServer {
                    host: self.endpoint.clone(),
                    message: format!(
                        "integer_datetimes is {v}; binary timestamps need integer_datetimes=on"
                    ),
                });
            }
        }
        self.server_version_num = match self
            .params
            .get("server_version")
            .and_then(|v| protocol::parse_server_version(v))
        {
            Some(n) => n,
            None => {
                let rows = self.simple_query("SHOW server_version_num")?;
                rows.first()
                    .and_then(|r| r.first())
                    .and_then(|v| v.as_deref())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| SourceError::UnsupportedServer {
                        host: self.endpoint.clone(),
                        message: "cannot tell the server version".to_string(),
                    })?
            }
        };
        Ok(())
    }

    /// `host:port` or the Unix socket path.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// e.g. 150018 for 15.18.
    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// Process id of the server backend (for `pg_terminate_backend`,
    /// `pg_cancel_backend`, logs).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// A server parameter reported by ParameterStatus (server_version,
    /// TimeZone, integer_datetimes, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// Runs `sql` (one or more statements) with the simple protocol and
    /// returns the rows of the last result as text, `None` for NULL. Only
    /// for SQL written in full by the program: anything built from what a
    /// user gave goes through [`Connection::query`].
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        let context = format!("running `{}`", summary(sql));
        self.check_usable()?;
        self.send(&protocol::query(sql), &context)?;
        let mut rows = Vec::new();
        let mut current = Vec::new();
        self.read_until_ready(&context, "simple_query", |conn, msg| {
            match msg.tag {
                tag::ROW_DESCRIPTION => current.clear(),
                tag::DATA_ROW => current.push(
                    protocol::parse_data_row(&msg.body).map_err(|v| conn.violation(&context, v))?,
                ),
                tag::COMMAND_COMPLETE | tag::EMPTY_QUERY_RESPONSE => {
                    rows = std::mem::take(&mut current);
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(rows)
    }

    /// Runs `sql` and discards any rows.
    pub fn execute(&mut self, sql: &str) -> Result<(), SourceError> {
        self.simple_query(sql).map(|_| ())
    }

    /// The result columns of `sql` without running it (Parse, Describe,
    /// Sync of the unnamed statement): (name, type OID, typmod, table OID,
    /// column attnum). A statement returning no rows gives an empty list.
    pub fn describe(&mut self, sql: &str) -> Result<Vec<DescribedColumn>, SourceError> {
        let context = format!("describing `{}`", summary(sql));
        self.check_usable()?;
        self.send(&protocol::parse_describe_sync(sql), &context)?;
        let mut columns = Vec::new();
        self.read_until_ready(&context, "describe", |conn, msg| {
            match msg.tag {
                tag::PARSE_COMPLETE | tag::PARAMETER_DESCRIPTION | tag::NO_DATA => {}
                tag::ROW_DESCRIPTION => {
                    columns = protocol::parse_row_description(&msg.body)
                        .map_err(|v| conn.violation(&context, v))?
                        .into_iter()
                        .map(|f| (f.name, f.type_oid, f.typmod, f.table_oid, f.column_attnum))
                        .collect();
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(columns)
    }

    /// Runs one statement with the extended protocol (see
    /// [`Connection::send_statement`]) and returns its rows as text, `None`
    /// for NULL. For SQL that carries anything a user gave: values go in as
    /// parameters, and the rest cannot add a second statement. `what` says
    /// in errors what the statement was for ("looking up table x"): the
    /// program's own SQL means nothing to a user.
    pub fn query(
        &mut self,
        what: &str,
        sql: &str,
        params: &[Param],
    ) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        let context = what.to_string();
        self.send_statement(sql, params, protocol::format::TEXT, &context)?;
        let mut rows = Vec::new();
        self.read_statement_rows(&context, "query", |conn, body| {
            rows.push(protocol::parse_data_row(body).map_err(|v| conn.violation(&context, v))?);
            Ok(())
        })?;
        Ok(rows)
    }

    /// [`Connection::query`] with result columns in binary, so a `bytea`
    /// travels as its bytes, not as hex text. An error from the server
    /// leaves the session usable (and a transaction block failed, as with
    /// any statement).
    pub fn query_binary(&mut self, sql: &str, params: &[Param]) -> Result<BinaryRows, SourceError> {
        let context = format!("running `{}`", summary(sql));
        self.send_statement(sql, params, protocol::format::BINARY, &context)?;
        let mut rows = Vec::new();
        self.read_statement_rows(&context, "query_binary", |conn, body| {
            // Binary values are not text: they come back as they are.
            let row = protocol::parse_data_row_raw(body)
                .map_err(|v| conn.violation(&context, v))?
                .into_iter()
                .map(|v| v.map(<[u8]>::to_vec))
                .collect();
            rows.push(row);
            Ok(())
        })?;
        Ok(rows)
    }

    /// Sends `sql` as Parse, Bind, Execute and Sync of the unnamed
    /// statement and portal, parameters in binary. Parse takes exactly one
    /// statement, so nothing spliced into `sql` can run a second one.
    pub(crate) fn send_statement(
        &mut self,
        sql: &str,
        params: &[Param],
        result_format: i16,
        context: &str,
    ) -> Result<(), SourceError> {
        self.check_usable()?;
        let types: Vec<u32> = params.iter().map(|p| p.type_oid).collect();
        let values: Vec<Option<&[u8]>> = params.iter().map(|p| p.value.as_deref()).collect();
        let message = protocol::extended_query(sql, &types, &values, result_format)
            .map_err(|v| self.violation(context, v))?;
        self.send(&message, context)
    }

    /// The replies to [`Connection::send_statement`] up to ReadyForQuery,
    /// each DataRow body handed to `on_row`.
    fn read_statement_rows(
        &mut self,
        context: &str,
        what: &str,
        mut on_row: impl FnMut(&Self, &[u8]) -> Result<(), SourceError>,
    ) -> Result<(), SourceError> {
        self.read_until_ready(context, what, |conn, msg| {
            match msg.tag {
                tag::PARSE_COMPLETE
                | tag::BIND_COMPLETE
                | tag::NO_DATA
                | tag::COMMAND_COMPLETE
                | tag::EMPTY_QUERY_RESPONSE => {}
                tag::DATA_ROW => on_row(conn, &msg.body)?,
                _ => return Ok(false),
            }
            Ok(true)
        })
    }

    /// Reads the replies to one request up to ReadyForQuery. `on` takes the
    /// messages its caller expects and returns false for the others. An
    /// ErrorResponse is kept and returned once ReadyForQuery has come, so
    /// the session stays usable; COPY, or any message nobody expects, breaks
    /// the connection (its state is then unknown). `what` names the caller
    /// in messages.
    fn read_until_ready(
        &mut self,
        context: &str,
        what: &str,
        mut on: impl FnMut(&Self, &Message) -> Result<bool, SourceError>,
    ) -> Result<(), SourceError> {
        let mut error: Option<ErrorFields> = None;
        loop {
            let msg = self.next_message(context)?;
            if on(self, &msg)? {
                continue;
            }
            match msg.tag {
                tag::ERROR_RESPONSE => {
                    error = Some(
                        protocol::parse_error(&msg.body).map_err(|v| self.violation(context, v))?,
                    );
                }
                tag::READY_FOR_QUERY => break,
                tag::COPY_OUT_RESPONSE | tag::COPY_IN_RESPONSE | tag::COPY_BOTH_RESPONSE => {
                    self.broken = true;
                    return Err(self.protocol_error(
                        context,
                        &format!("{what} cannot run COPY; use copy_out"),
                    ));
                }
                other => {
                    self.broken = true;
                    return Err(self.protocol_error(
                        context,
                        &format!("unexpected message {:?}", char::from(other)),
                    ));
                }
            }
        }
        match error {
            Some(f) => Err(self.server_error(f, context.to_string())),
            None => Ok(()),
        }
    }

    // ---- plumbing shared with auth and copy -------------------------------

    pub(crate) fn check_usable(&self) -> Result<(), SourceError> {
        if self.broken {
            return Err(SourceError::Broken {
                host: self.endpoint.clone(),
            });
        }
        Ok(())
    }

    pub(crate) fn send(&mut self, bytes: &[u8], during: &str) -> Result<(), SourceError> {
        let r = self
            .stream
            .write_all(bytes)
            .and_then(|()| self.stream.flush());
        r.map_err(|e| {
            self.broken = true;
            self.lost(during, e)
        })
    }

    /// The next message, with ParameterStatus recorded and notices dropped
    /// (they can come at any time).
    pub(crate) fn next_message(&mut self, during: &str) -> Result<Message, SourceError> {
        loop {
            let msg = self.read_message(during)?;
            match msg.tag {
                tag::PARAMETER_STATUS => self.record_parameter_status(&msg.body, during)?,
                tag::NOTICE_RESPONSE | tag::NOTIFICATION_RESPONSE => {}
                _ => return Ok(msg),
            }
        }
    }

    pub(crate) fn record_parameter_status(
        &mut self,
        body: &[u8],
        during: &str,
    ) -> Result<(), SourceError> {
        let (k, v) =
            protocol::parse_parameter_status(body).map_err(|e| self.violation(during, e))?;
        self.params.insert(k, v);
        Ok(())
    }

    fn read_message(&mut self, during: &str) -> Result<Message, SourceError> {
        loop {
            let avail = self.rend - self.rstart;
            if avail >= HEADER_LEN {
                let (t, len) =
                    protocol::header(&self.rbuf[self.rstart..self.rend]).map_err(|v| {
                        self.broken = true;
                        self.violation(during, v)
                    })?;
                if avail >= HEADER_LEN + len {
                    let start = self.rstart + HEADER_LEN;
                    let body = self.rbuf[start..start + len].to_vec();
                    self.rstart = start + len;
                    return Ok(Message { tag: t, body });
                }
                if self.rbuf.len() < HEADER_LEN + len {
                    self.rbuf.resize(HEADER_LEN + len, 0);
                }
            }
            // Move the partial message to the front to make room.
            if self.rstart > 0 {
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                self.rend -= self.rstart;
                self.rstart = 0;
            }
            let n = loop {
                match self.stream.read(&mut self.rbuf[self.rend..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.broken = true;
                        return Err(self.lost(during, e));
                    }
                }
            };
            if n == 0 {
                self.broken = true;
                return Err(self.lost(
                    during,
                    io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the connection"),
                ));
            }
            self.rend += n;
        }
    }

    /// Puts bytes the COPY reader read past its last message back in front
    /// of the message reader.
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        let pending = self.rend - self.rstart;
        let mut v = Vec::with_capacity((bytes.len() + pending).max(READ_BUF));
        v.extend_from_slice(bytes);
        v.extend_from_slice(&self.rbuf[self.rstart..self.rend]);
        let used = v.len();
        v.resize(v.capacity(), 0);
        self.rbuf = v;
        self.rstart = 0;
        self.rend = used;
    }

    /// Reads up to ReadyForQuery after an error so the session is usable
    /// again.
    pub(crate) fn wait_ready(&mut self, during: &str) -> Result<(), SourceError> {
        loop {
            if self.next_message(during)?.tag == tag::READY_FOR_QUERY {
                return Ok(());
            }
        }
    }

    pub(crate) fn server_error(&mut self, f: ErrorFields, context: String) -> SourceError {
        // FATAL and PANIC end the session; the server closes the socket.
        if f.severity == "FATAL" || f.severity == "PANIC" {
            self.broken = true;
        }
        SourceError::Server {
            code: f.code,
            message: f.message,
            detail: f.detail,
            hint: f.hint,
            context: format!("{context} on {}", self.endpoint),
        }
    }

    pub(crate) fn lost(&self, during: &str, e: io::Error) -> SourceError {
        SourceError::ConnectionLost {
            host: self.endpoint.clone(),
            during: during.to_string(),
            reason: e.to_string(),
        }
    }

    pub(crate) fn violation(&self, during: &str, v: ProtocolViolation) -> SourceError {
        self.protocol_error(during, &v.0)
    }

    pub(crate) fn protocol_error(&self, during: &str, message: &str) -> SourceError {
        SourceError::Protocol {
            host: self.endpoint.clone(),
            during: during.to_string(),
            message: message.to_string(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if !self.broken {
            // Polite goodbye so the server logs no "unexpected EOF"; the
            // socket closes either way.
            let _ = self.stream.write_all(&protocol::terminate());
            let _ = self.stream.flush();
        }
    }
}

/// What a failed (or, when the deadline passed just after, finished)
/// startup was doing, for the timeout message.
fn phase_of(result: &Result<Connection, SourceError>) -> String {
    match result {
        Err(SourceError::ConnectionLost { during, .. } | SourceError::Protocol { during, .. }) => {
            during.clone()
        }
        Err(SourceError::Tls { .. }) => "negotiating TLS".to_string(),
        Err(SourceError::Auth { .. }) => "authenticating".to_string(),
        _ => "starting the session".to_string(),
    }
}

/// The socket to the server; connecting gives up at `deadline`.
fn open_socket(cfg: &ConnectConfig, deadline: Option<Instant>) -> Result<Socket, SourceError> {
    let endpoint = cfg.endpoint();
    let connect_err = |source: io::Error| SourceError::Connect {
        host: endpoint.clone(),
        source,
    };
    match &cfg.host {
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{}", cfg.port));
            match deadline {
                Some(d) => connect_unix(&path, d),
                None => UnixStream::connect(&path),
            }
            .map(Socket::Unix)
            .map_err(connect_err)
        }
        Host::Tcp(host) => {
            let addrs: Vec<SocketAddr> = match cfg.hostaddr {
                Some(ip) => vec![SocketAddr::new(ip, cfg.port)],
                None => (host.as_str(), cfg.port)
                    .to_socket_addrs()
                    .map_err(connect_err)?
                    .collect(),
            };
            let mut last =
                io::Error::new(io::ErrorKind::NotFound, "host name resolved to no address");
            for addr in addrs {
                let r = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                    Some(left) if left.is_zero() => Err(io::ErrorKind::TimedOut.into()),
                    Some(left) => TcpStream::connect_timeout(&addr, left),
                    None => TcpStream::connect(addr),
                };
                match r {
                    Ok(s) => {
                        // Requests are small and latency-bound; COPY data
                        // flows the other way and is unaffected.
                        s.set_nodelay(true).map_err(connect_err)?;
                        return Ok(Socket::Tcp(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(connect_err(last))
        }
    }
}

/// The start of a SQL text on one line, for error contexts.
pub(crate) fn summary(sql: &str) -> String {
    let one = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 100 {
        format!("{}...", one.chars().take(100).collect::<String>())
    } else {
        one
    }
}
