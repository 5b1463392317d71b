//! Connection settings: libpq keyword/value strings, `postgresql://` URLs,
//! the environment and the defaults.
//!
//! Resolution follows libpq: the connection string (given, or the first of
//! `GPUPGPARSER_PG_DSN`, `GPUPASER_PG_DSN`, `DATABASE_URL` that is set) wins;
//! a setting it leaves out comes from the service it (or `PGSERVICE`) names
//! in a `pg_service.conf`, then from the `PG*` environment variable, then
//! from the default. The password file is only located here; `auth` reads
//! it when the server asks for a password.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::SourceError;
use crate::service::{self, ServiceEntry};

/// Where the system-wide `pg_service.conf` is when `PGSYSCONFDIR` is not
/// set: Debian's libpq (the psql next to it looks there too).
const SYSCONFDIR: &str = "/etc/postgresql-common";

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address, connected over TCP.
    Tcp(String),
    /// The directory holding the Unix socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plaintext first; TLS only if the server refuses plaintext.
    Allow,
    /// TLS if the server offers it (certificate not verified), else plaintext.
    Prefer,
    /// TLS, certificate not verified.
    Require,
    /// TLS, certificate chain verified against the root certificates, host
    /// name not checked.
    VerifyCa,
    /// TLS, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    fn parse(s: &str) -> Result<SslMode, SourceError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(SourceError::Dsn(format!(
                "sslmode \"{other}\" is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )))
            }
        })
    }

    /// The mode as written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Everything needed to open a connection. `Debug` never shows the
/// password; use [`ConnectConfig::redacted`] in messages.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    /// The server's host name, address or socket directory.
    pub host: Host,
    /// An IP address to connect to instead of resolving `host` (which is
    /// still used for TLS host-name verification).
    pub hostaddr: Option<IpAddr>,
    /// TCP port, or the number in the Unix socket's name.
    pub port: u16,
    /// The role to log in as.
    pub user: String,
    /// The password, when given in the string or `PGPASSWORD`.
    pub password: Option<String>,
    /// The database to connect to.
    pub dbname: String,
    /// Whether and how TLS is used.
    pub sslmode: SslMode,
    /// Root certificates for verify-ca and verify-full (libpq's
    /// `sslrootcert`); `None` for the default roots.
    pub sslrootcert: Option<PathBuf>,
    /// Shown in `pg_stat_activity`, so the export's sessions can be found.
    pub application_name: String,
    /// How long connecting may take; `None` waits as long as the system does.
    pub connect_timeout: Option<Duration>,
    /// Command-line options sent to the server (e.g. `-c work_mem=1GB`).
    pub options: Option<String>,
    /// The password file (`passfile`, `PGPASSFILE`, else `~/.pgpass`)
    /// consulted when the server asks for a password and `password` is
    /// `None`.
    pub passfile: Option<PathBuf>,
}

impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("host", &self.host)
            .field("hostaddr", &self.hostaddr)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("options", &self.options)
            .field("passfile", &self.passfile)
            .finish()
    }
}

/// The settings one source (string or environment) gave, before defaults.
#[derive(Default, Debug)]
struct Settings {
    host: Option<String>,
    hostaddr: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    application_name: Option<String>,
    connect_timeout: Option<String>,
    options: Option<String>,
    service: Option<String>,
    passfile: Option<String>,
}

/// The keys of a connection string, for messages.
const KEYS: &str = "host, hostaddr, port, user, password, dbname, sslmode, sslrootcert, application_name, connect_timeout, options, service, passfile";

impl Settings {
    fn set(&mut self, key: &str, value: String) -> Result<(), SourceError> {
        *self.slot(key).map_err(SourceError::Dsn)? = Some(value);
        Ok(())
    }

    /// The setting named `key`, or why there is none.
    fn slot(&mut self, key: &str) -> Result<&mut Option<String>, String> {
        Ok(match key {
            "host" => &mut self.host,
            "hostaddr" => &mut self.hostaddr,
            "port" => &mut self.port,
            "user" => &mut self.user,
            "password" => &mut self.password,
            "dbname" => &mut self.dbname,
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "application_name" => &mut self.application_name,
            "connect_timeout" => &mut self.connect_timeout,
            "options" => &mut self.options,
            "service" => &mut self.service,
            "passfile" => &mut self.passfile,
            other => return Err(format!("unknown key \"{other}\" (supported: {KEYS})")),
        })
    }

    /// Takes the settings of a service (`pg_service.conf`) that the
    /// connection string left out: as in libpq, explicit keys win.
    fn add_service(&mut self, entries: Vec<ServiceEntry>) -> Result<(), SourceError> {
        for e in entries {
            let slot = self.slot(&e.key).map_err(|m| e.error(&m))?;
            if slot.is_none() {
                *slot = Some(e.value);
            }
        }
        Ok(())
    }
}

/// Environment variables that may hold a whole connection string, in order.
const DSN_VARS: [&str; 3] = ["GPUPGPARSER_PG_DSN", "GPUPASER_PG_DSN", "DATABASE_URL"];

impl ConnectConfig {
    /// Resolves the settings from `dsn` (or a connection string in the
    /// environment), the service it names, the `PG*` environment variables
    /// and the defaults.
    pub fn resolve(dsn: Option<&str>) -> Result<ConnectConfig, SourceError> {
        Self::resolve_in_env(dsn, &|k| {
            let v = std::env::var(k).ok().filter(|v| !v.is_empty());
            // Like libpq, a process without HOME (a system service) uses
            // the home directory of its user's passwd entry.
            if k == "HOME" {
                return v.or_else(passwd_home);
            }
            v
        })
    }

    /// [`ConnectConfig::resolve`] with `env` in place of the process
    /// environment (`HOME` included, which locates `~/.pgpass` and
    /// `~/.pg_service.conf`), so that parallel tests need not change it.
    pub fn resolve_in_env(
        dsn: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConnectConfig, SourceError> {
        Self::resolve_with(dsn, env, &|p: &Path| p.exists())
    }

    /// [`ConnectConfig::resolve_in_env`] with the file system's socket
    /// check as a closure too.
    fn resolve_with(
        dsn: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
        exists: &dyn Fn(&Path) -> bool,
    ) -> Result<ConnectConfig, SourceError> {
        let mut s = given_settings(dsn, env)?;
        // libpq's order: the string, then its service, then the environment.
        s.add_named_service(env)?;
        s.add_environment(env);
        s.into_config(env, exists)
    }
}

/// The settings of the given connection string, else of the first
/// connection string variable that is set, else none.
fn given_settings(
    dsn: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, SourceError> {
    let (dsn, origin) = match dsn {
        Some(d) => (d.to_string(), "the given connection string".to_string()),
        None => match DSN_VARS
            .iter()
            .find_map(|v| env(v).filter(|s| !s.trim().is_empty()).map(|s| (s, *v)))
        {
            Some((s, var)) => (s, format!("environment variable {var}")),
            None => return Ok(Settings::default()),
        },
    };
    parse_dsn(&dsn).map_err(|e| match e {
        SourceError::Dsn(m) => SourceError::Dsn(format!("{m} (in {origin})")),
        other => other,
    })
}

/// The home directory of the effective user's passwd entry.
fn passwd_home() -> Option<String> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is plain data (integers and pointers), valid zeroed.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes only into entry and buf, whose size is
    // given; found is null unless entry was filled.
    let rc = unsafe {
        libc::getpwuid_r(
            libc::geteuid(),
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 || found.is_null() || entry.pw_dir.is_null() {
        return None;
    }
    // SAFETY: pw_dir points to a NUL-terminated string inside buf, which
    // outlives this borrow.
    let dir = unsafe { std::ffi::CStr::from_ptr(entry.pw_dir) };
    dir.to_str()
        .ok()
        .filter(|d| !d.is_empty())
        .map(str::to_string)
}

/// A variable's value unless it is unset or empty (libpq treats both alike).
fn var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

/// `$HOME/name`: libpq's per-user files.
fn home_file(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<PathBuf> {
    var(env, "HOME").map(|h| Path::new(&h).join(name))
}

impl Settings {
    /// The settings of the service named by `service` or `PGSERVICE`, for
    /// what the string left out. The user's file is `PGSERVICEFILE` or
    /// `~/.pg_service.conf`, the system's `PGSYSCONFDIR/pg_service.conf`.
    fn add_named_service(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), SourceError> {
        let Some(name) = self
            .service
            .clone()
            .filter(|s| !s.is_empty())
            .or_else(|| var(env, "PGSERVICE"))
        else {
            return Ok(());
        };
        let user_file = var(env, "PGSERVICEFILE")
            .map(PathBuf::from)
            .or_else(|| home_file(env, ".pg_service.conf"));
        let system_dir = var(env, "PGSYSCONFDIR").unwrap_or_else(|| SYSCONFDIR.to_string());
        let system_file = Path::new(&system_dir).join("pg_service.conf");
        self.add_service(service::lookup(&name, user_file.as_deref(), &system_file)?)
    }

    /// libpq falls back to the environment for each missing setting.
    fn add_environment(&mut self, env: &dyn Fn(&str) -> Option<String>) {
        let fill = |slot: &mut Option<String>, name: &str| {
            if slot.is_none() {
                *slot = var(env, name);
            }
        };
        fill(&mut self.host, "PGHOST");
        fill(&mut self.hostaddr, "PGHOSTADDR");
        fill(&mut self.port, "PGPORT");
        fill(&mut self.user, "PGUSER");
        fill(&mut self.password, "PGPASSWORD");
        fill(&mut self.dbname, "PGDATABASE");
        fill(&mut self.sslmode, "PGSSLMODE");
        fill(&mut self.sslrootcert, "PGSSLROOTCERT");
        fill(&mut self.application_name, "PGAPPNAME");
        fill(&mut self.connect_timeout, "PGCONNECT_TIMEOUT");
        fill(&mut self.options, "PGOPTIONS");
        fill(&mut self.passfile, "PGPASSFILE");
    }

    /// The configuration, with libpq's defaults for what is still missing.
    fn into_config(
        self,
        env: &dyn Fn(&str) -> Option<String>,
        exists: &dyn Fn(&Path) -> bool,
    ) -> Result<ConnectConfig, SourceError> {
        let port = match &self.port {
            Some(p) => parse_port(p)?,
            None => 5432,
        };
        let hostaddr =
            match &self.hostaddr {
                Some(a) => Some(a.parse::<IpAddr>().map_err(|_| {
                    SourceError::Dsn(format!("hostaddr \"{a}\" is not an IP address"))
                })?),
                None => None,
            };
        let host = match (&self.host, hostaddr) {
            (Some(h), _) if h.contains(',') => {
                return Err(SourceError::Dsn(format!(
                    "host list \"{h}\": only one host is supported"
                )))
            }
            (Some(h), _) if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
            (Some(h), _) if !h.is_empty() => Host::Tcp(h.clone()),
            // libpq connects to a lone hostaddr over TCP, not to the socket.
            (_, Some(a)) => Host::Tcp(a.to_string()),
            _ => default_host(port, exists),
        };
        let user = self
            .user
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
            .unwrap_or_else(|| "postgres".to_string());
        Ok(ConnectConfig {
            host,
            hostaddr,
            port,
            dbname: self.dbname.unwrap_or_else(|| user.clone()),
            user,
            password: self.password,
            sslmode: match &self.sslmode {
                Some(m) => SslMode::parse(m)?,
                None => SslMode::Prefer,
            },
            sslrootcert: self.sslrootcert.map(PathBuf::from),
            application_name: self
                .application_name
                .unwrap_or_else(|| "gpupgparser".to_string()),
            connect_timeout: match &self.connect_timeout {
                Some(t) => parse_connect_timeout(t)?,
                None => None,
            },
            options: self.options,
            passfile: self
                .passfile
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .or_else(|| home_file(env, ".pgpass")),
        })
    }
}

fn parse_port(p: &str) -> Result<u16, SourceError> {
    p.trim()
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| SourceError::Dsn(format!("port \"{p}\" is not a TCP port number")))
}

fn parse_connect_timeout(t: &str) -> Result<Option<Duration>, SourceError> {
    let secs: i64 = t.trim().parse().map_err(|_| {
        SourceError::Dsn(format!(
            "connect_timeout \"{t}\" is not a number of seconds"
        ))
    })?;
    // libpq: zero or negative means wait forever; 1 is raised to 2.
    Ok((secs > 0).then(|| Duration::from_secs(secs.max(2) as u64)))
}

impl ConnectConfig {
    /// The settings as a keyword/value string without the password, for
    /// messages and logs.
    pub fn redacted(&self) -> String {
        let host = match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        };
        let mut out = format!(
            "host={} port={} user={} dbname={} sslmode={}",
            kv_quote(&host),
            self.port,
            kv_quote(&self.user),
            kv_quote(&self.dbname),
            self.sslmode.as_str()
        );
        if let Some(a) = self.hostaddr {
            out.push_str(&format!(" hostaddr={a}"));
        }
        if self.password.is_some() {
            out.push_str(" password=<redacted>");
        }
        if let Some(r) = &self.sslrootcert {
            out.push_str(&format!(
                " sslrootcert={}",
                kv_quote(&r.display().to_string())
            ));
        }
        out
    }

    /// Every setting as a keyword/value string, the password included, that
    /// [`ConnectConfig::resolve`] turns back into this configuration: for
    /// handing a connection to another process of the same user (the store
    /// server runs loads with the client's settings). Never print it; use
    /// [`ConnectConfig::redacted`] in messages.
    pub fn to_connection_string(&self) -> String {
        let host = match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        };
        let mut out = format!(
            "host={} port={} user={} dbname={} sslmode={} application_name={}",
            kv_quote(&host),
            self.port,
            kv_quote(&self.user),
            kv_quote(&self.dbname),
            self.sslmode.as_str(),
            kv_quote(&self.application_name)
        );
        if let Some(a) = self.hostaddr {
            out.push_str(&format!(" hostaddr={a}"));
        }
        if let Some(p) = &self.password {
            out.push_str(&format!(" password={}", kv_quote(p)));
        }
        if let Some(r) = &self.sslrootcert {
            out.push_str(&format!(
                " sslrootcert={}",
                kv_quote(&r.display().to_string())
            ));
        }
        if let Some(t) = self.connect_timeout {
            out.push_str(&format!(" connect_timeout={}", t.as_secs()));
        }
        if let Some(o) = &self.options {
            out.push_str(&format!(" options={}", kv_quote(o)));
        }
        if let Some(f) = &self.passfile {
            out.push_str(&format!(" passfile={}", kv_quote(&f.display().to_string())));
        }
        out
    }

    /// `host:port` (TCP) or the socket path (Unix), for error messages.
    pub fn endpoint(&self) -> String {
        match &self.host {
            Host::Tcp(h) if h.contains(':') => format!("[{h}]:{}", self.port),
            Host::Tcp(h) => format!("{h}:{}", self.port),
            Host::Unix(dir) => dir
                .join(format!(".s.PGSQL.{}", self.port))
                .display()
                .to_string(),
        }
    }
}

/// The socket directories of libpq's builds: Debian's, then upstream's.
pub(crate) const DEFAULT_SOCKET_DIRS: [&str; 2] = ["/var/run/postgresql", "/tmp"];

/// libpq's default: the Unix socket of the usual directories when it exists,
/// else localhost over TCP.
fn default_host(port: u16, exists: &dyn Fn(&Path) -> bool) -> Host {
    for dir in DEFAULT_SOCKET_DIRS {
        let dir = Path::new(dir);
        if exists(&dir.join(format!(".s.PGSQL.{port}"))) {
            return Host::Unix(dir.to_path_buf());
        }
    }
    Host::Tcp("localhost".to_string())
}

fn kv_quote(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn parse_dsn(dsn: &str) -> Result<Settings, SourceError> {
    let t = dsn.trim();
    if let Some(rest) = t
        .strip_prefix("postgresql://")
        .or_else(|| t.strip_prefix("postgres://"))
    {
        parse_url(rest)
    } else if t.contains("://") {
        Err(SourceError::Dsn(
            "URL scheme must be postgresql:// or postgres://".to_string(),
        ))
    } else {
        parse_keyword_value(t)
    }
}

/// `key = value ...` where a value is bare (ends at white space) or in
/// single quotes; backslash escapes the next character in both.
fn parse_keyword_value(s: &str) -> Result<Settings, SourceError> {
    let mut out = Settings::default();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(SourceError::Dsn(format!(
                "missing \"=\" after key \"{key}\""
            )));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(n) => value.push(n),
                        None => break,
                    },
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err(SourceError::Dsn(format!(
                    "unterminated quoted value for key \"{key}\""
                )));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.set(&key, value)?;
    }
    Ok(out)
}

/// The part of a `postgresql://` URL after the scheme:
/// `[user[:password]@][host][:port][/dbname][?key=value&...]`.
fn parse_url(rest: &str) -> Result<Settings, SourceError> {
    let mut out = Settings::default();
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (main, None),
    };
    // The last '@' separates credentials: a password may contain '@' only
    // percent-encoded, but be lenient about it.
    let hostport = match authority.rsplit_once('@') {
        Some((cred, hp)) => {
            let (u, p) = match cred.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (cred, None),
            };
            if !u.is_empty() {
                out.user = Some(percent_decode(u, "user")?);
            }
            if let Some(p) = p {
                out.password = Some(percent_decode(p, "password")?);
            }
            hp
        }
        None => authority,
    };
    if hostport.contains(',') {
        return Err(SourceError::Dsn(format!(
            "host list \"{hostport}\": only one host is supported"
        )));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| SourceError::Dsn(format!("unclosed \"[\" in host \"{hostport}\"")))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => {
                return Err(SourceError::Dsn(format!(
                    "unexpected \"{after}\" after IPv6 host"
                )))
            }
        };
        (h, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if !host.is_empty() {
        out.host = Some(percent_decode(host, "host")?);
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        out.port = Some(percent_decode(p, "port")?);
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.dbname = Some(percent_decode(db, "dbname")?);
    }
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                SourceError::Dsn(format!("URL parameter \"{pair}\" has no \"=\""))
            })?;
            let k = percent_decode(k, "parameter name")?;
            let v = percent_decode(v, &k)?;
            out.set(&k, v)?;
        }
    }
    Ok(out)
}

fn percent_decode(s: &str, what: &str) -> Result<String, SourceError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| SourceError::Dsn(format!("bad percent-encoding in URL {what}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| SourceError::Dsn(format!("URL {what} is not UTF-8 after percent-decoding")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(dsn: Option<&str>, env: &[(&str, &str)]) -> Result<ConnectConfig, SourceError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ConnectConfig::resolve_with(dsn, &|k| env.get(k).cloned(), &|_| false)
    }

    #[test]
    fn keyword_value_with_quotes_and_escapes() {
        let c = resolve(
            Some(r"host=db.example port = 6543 user='my user' password='it\'s \\ secret' dbname=x sslmode=verify-full application_name=app connect_timeout=1 options='-c work_mem=64MB'"),
            &[],
        )
        .unwrap();
        assert_eq!(c.host, Host::Tcp("db.example".into()));
        assert_eq!(c.port, 6543);
        assert_eq!(c.user, "my user");
        assert_eq!(c.password.as_deref(), Some(r"it's \ secret"));
        assert_eq!(c.dbname, "x");
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(c.application_name, "app");
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.options.as_deref(), Some("-c work_mem=64MB"));
    }

    #[test]
    fn connection_string_resolves_back_to_the_same_settings() {
        for dsn in [
            r"host=db.example hostaddr=10.0.0.1 port=6543 user='my user' password='it\'s \\ secret' dbname=x sslmode=verify-full sslrootcert='/etc/my ca.pem' application_name=app connect_timeout=7 options='-c work_mem=64MB'",
            "host=/tmp port=5444 user=u dbname=d passfile='/my dir/pgpass'",
            "postgresql://us%40er:p%20w%3A@[::1]:5433/my%20db?sslmode=require",
        ] {
            let c = resolve(Some(dsn), &[]).unwrap();
            let again = resolve(Some(&c.to_connection_string()), &[]).unwrap();
            assert_eq!(again, c, "{dsn}");
        }
    }

    #[test]
    fn url_with_percent_encoding_and_params() {
        let c = resolve(
            Some("postgresql://us%40er:p%20w%3A@[::1]:5433/my%20db?sslmode=require&application_name=a%26b"),
            &[],
        )
        .unwrap();
        assert_eq!(c.user, "us@er");
        assert_eq!(c.password.as_deref(), Some("p w:"));
        assert_eq!(c.host, Host::Tcp("::1".into()));
        assert_eq!(c.port, 5433);
        assert_eq!(c.dbname, "my db");
        assert_eq!(c.sslmode, SslMode::Require);
        assert_eq!(c.application_name, "a&b");
        assert_eq!(c.endpoint(), "[::1]:5433");
    }

    #[test]
    fn unix_sockets() {
        let c = resolve(Some("postgres://%2Fvar%2Frun%2Fpostgresql/db"), &[]).unwrap();
        assert_eq!(c.host, Host::Unix("/var/run/postgresql".into()));
        assert_eq!(c.endpoint(), "/var/run/postgresql/.s.PGSQL.5432");
        let c = resolve(Some("host=/tmp port=5444"), &[]).unwrap();
        assert_eq!(c.host, Host::Unix("/tmp".into()));
        let c = resolve(Some("postgresql:///db?host=/sock"), &[]).unwrap();
        assert_eq!(c.host, Host::Unix("/sock".into()));
        assert_eq!(c.dbname, "db");
    }

    #[test]
    fn errors_name_the_problem() {
        let e = resolve(Some("host=x bogus=1"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key \"bogus\""), "{e}");
        let e = resolve(Some("host=x port=99999"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("port \"99999\""), "{e}");
        let e = resolve(Some("host='x"), &[]).unwrap_err().to_string();
        assert!(e.contains("unterminated"), "{e}");
        let e = resolve(Some("host"), &[]).unwrap_err().to_string();
        assert!(e.contains("missing \"=\""), "{e}");
        let e = resolve(Some("sslmode=maybe"), &[]).unwrap_err().to_string();
        assert!(e.contains("sslmode \"maybe\""), "{e}");
        let e = resolve(Some("postgres://a,b/db"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("only one host"), "{e}");
        let e = resolve(Some("mysql://x"), &[]).unwrap_err().to_string();
        assert!(e.contains("scheme"), "{e}");
        let e = resolve(None, &[("DATABASE_URL", "postgres://h/?foo=1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("DATABASE_URL"), "{e}");
    }

    #[test]
    fn env_precedence() {
        // The given string beats every variable.
        let c = resolve(
            Some("host=given"),
            &[("GPUPGPARSER_PG_DSN", "host=a"), ("PGHOST", "pghost")],
        )
        .unwrap();
        assert_eq!(c.host, Host::Tcp("given".into()));
        // Then the DSN variables in order.
        let c = resolve(
            None,
            &[
                ("GPUPGPARSER_PG_DSN", "host=a"),
                ("GPUPASER_PG_DSN", "host=b"),
                ("DATABASE_URL", "postgres://c"),
            ],
        )
        .unwrap();
        assert_eq!(c.host, Host::Tcp("a".into()));
        let c = resolve(
            None,
            &[
                ("GPUPASER_PG_DSN", "host=b"),
                ("DATABASE_URL", "postgres://c"),
            ],
        )
        .unwrap();
        assert_eq!(c.host, Host::Tcp("b".into()));
        let c = resolve(None, &[("DATABASE_URL", "postgres://c")]).unwrap();
        assert_eq!(c.host, Host::Tcp("c".into()));
        // PG* variables fill what the string leaves out.
        let c = resolve(
            None,
            &[
                ("DATABASE_URL", "postgres://c/db1"),
                ("PGHOST", "ignored"),
                ("PGPASSWORD", "pw"),
                ("PGUSER", "u"),
                ("PGSSLMODE", "disable"),
                ("PGSSLROOTCERT", "/ca.pem"),
                ("PGAPPNAME", "x"),
                ("PGPORT", "7000"),
            ],
        )
        .unwrap();
        assert_eq!(c.host, Host::Tcp("c".into()));
        assert_eq!(c.dbname, "db1");
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.user, "u");
        assert_eq!(c.port, 7000);
        assert_eq!(c.sslmode, SslMode::Disable);
        assert_eq!(c.sslrootcert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(c.application_name, "x");
    }

    #[test]
    fn defaults() {
        let c = resolve(None, &[("USER", "alice")]).unwrap();
        assert_eq!(c.host, Host::Tcp("localhost".into()));
        assert_eq!(c.port, 5432);
        assert_eq!(c.user, "alice");
        assert_eq!(c.dbname, "alice");
        assert_eq!(c.sslmode, SslMode::Prefer);
        assert_eq!(c.application_name, "gpupgparser");
        // The Unix socket is the default host when it exists.
        let c = ConnectConfig::resolve_with(None, &|_| None, &|p: &Path| {
            p == Path::new("/tmp/.s.PGSQL.5432")
        })
        .unwrap();
        assert_eq!(c.host, Host::Unix("/tmp".into()));
    }

    #[test]
    fn service_sits_between_the_string_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("services");
        std::fs::write(
            &file,
            "[s]\nhost=svc\nport=6000\nuser=su\npassfile=/svc/pass\n",
        )
        .unwrap();
        let file = file.to_str().unwrap();
        let env = [
            ("PGSERVICEFILE", file),
            ("PGSYSCONFDIR", "/nonexistent"),
            ("PGPORT", "7000"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
        ];
        let c = resolve(Some("service=s user=given"), &env).unwrap();
        assert_eq!(c.host, Host::Tcp("svc".into()));
        assert_eq!(c.port, 6000, "the service beats PGPORT");
        assert_eq!(c.user, "given", "the string beats the service");
        assert_eq!(c.dbname, "envdb", "the environment fills the rest");
        assert_eq!(c.passfile, Some(PathBuf::from("/svc/pass")));
        let mut env = env.to_vec();
        env.push(("PGSERVICE", "s"));
        assert_eq!(resolve(None, &env).unwrap().port, 6000);
        let e = resolve(Some("service=t"), &env).unwrap_err().to_string();
        assert!(e.starts_with("service \"t\": no [t] section in "), "{e}");
        std::fs::write(file, "[s]\nbogus=1\n").unwrap();
        let e = resolve(Some("service=s"), &env).unwrap_err().to_string();
        assert!(e.contains("services, line 2: unknown key \"bogus\""), "{e}");
    }

    #[test]
    fn password_file_location() {
        let pf = |dsn: &str, env: &[(&str, &str)]| resolve(Some(dsn), env).unwrap().passfile;
        assert_eq!(pf("", &[]), None);
        assert_eq!(pf("", &[("HOME", "/h")]), Some("/h/.pgpass".into()));
        let env = [("HOME", "/h"), ("PGPASSFILE", "/p")];
        assert_eq!(pf("", &env), Some("/p".into()));
        assert_eq!(pf("passfile=/k", &env), Some("/k".into()));
    }

    #[test]
    fn home_of_the_passwd_entry() {
        // The entry of this process's user, as getent prints it.
        let uid = std::fs::metadata("/proc/self").map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid()
        });
        let out = std::process::Command::new("getent")
            .args(["passwd", &uid.unwrap().to_string()])
            .output()
            .unwrap();
        let line = String::from_utf8(out.stdout).unwrap();
        let home = line.trim_end().split(':').nth(5).map(str::to_string);
        assert!(home.is_some(), "{line}");
        assert_eq!(passwd_home(), home);
    }

    #[test]
    fn lone_hostaddr_is_tcp() {
        let c =
            ConnectConfig::resolve_with(Some("hostaddr=127.0.0.1"), &|_| None, &|_| true).unwrap();
        assert_eq!(c.host, Host::Tcp("127.0.0.1".into()));
        assert_eq!(c.endpoint(), "127.0.0.1:5432");
    }

    #[test]
    fn password_is_never_shown() {
        let c = resolve(Some("host=h user=u password=hunter2"), &[]).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.redacted().contains("hunter2"));
        assert!(c.redacted().contains("password=<redacted>"));
        assert!(c.redacted().contains("host=h port=5432 user=u"));
    }
}
