//! The wire protocol between `gpupgparser store ...` (or any program) and
//! `gpupgparser serve`: one JSON object per line over a Unix stream
//! socket, each request answered by one response line, in order.
//!
//! ```text
//! -> {"v":1,"op":"load","spec":{"table":"lineorder","name":"lo","dsn":"host=/tmp ...","device":0}}
//! <- {"v":1,"ok":true,"result":{"name":"lo","revision":1,"rows":6001215, ...}}
//! -> {"v":1,"op":"attach","name":"lo"}
//! <- {"v":1,"ok":true,"result":{"format":"gpupgparser-store-manifest", ...}}
//! -> {"v":1,"op":"release","name":"lo","revision":1}
//! <- {"v":1,"ok":true,"result":{"released":true}}
//! -> {"v":1,"op":"drop","name":"nope"}
//! <- {"v":1,"ok":false,"error":{"kind":"unknown_table","message":"no table named \"nope\" in the store"}}
//! ```
//!
//! Every request carries the protocol version `v`; a server answers a
//! version it does not speak with the error kind `version` (and says which
//! it speaks) instead of guessing. Results are objects, so later versions
//! can add fields that older clients ignore. docs/store.md has the full
//! list of operations and fields.

use std::fmt;
use std::io::{BufRead, Read};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorKind, StoreError};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line a server accepts.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;

/// Longest response line a client accepts (a manifest of a table with
/// thousands of chunks is a few MB).
pub const MAX_RESPONSE_BYTES: u64 = 256 << 20;

/// Where rows come from: the export's choice, sent as `"auto"`, `"copy"`
/// or `"heap"`.
pub use gpupg_export::Source;

/// How the heap path makes the files current: the export's choice, sent as
/// `"auto"`, `"checkpoint"`, `"buffercache"` or `"wal"`.
pub use gpupg_export::HeapSync;

/// What to load and how: the table, the connection (the server connects
/// with the client's settings) and the export options that apply to a
/// device-resident load.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSpec {
    /// The table as SQL names it (schema-qualified, quoted or not).
    pub table: String,
    /// Name in the store (default: the table as given).
    #[serde(default)]
    pub name: Option<String>,
    /// Connection string, password included: it only travels over the
    /// owner-only socket and is never printed or listed.
    pub dsn: String,
    /// The GPU to hold the table (`devices` overrides it).
    #[serde(default)]
    pub device: usize,
    /// Where rows come from (default: `auto`).
    #[serde(default)]
    pub source: Source,
    /// Only these columns, in this order.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
    /// Rebuild in the background when the table has changed, checking this
    /// often.
    #[serde(default)]
    pub auto_refresh_seconds: Option<u64>,
    /// Connections (default: cores, at most 16).
    #[serde(default)]
    pub parallel: Option<usize>,
    /// Decoder threads (default: the export's default for its engine).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Chunk size in MiB (default: the export's).
    #[serde(default)]
    pub chunk_mib: Option<usize>,
    /// Smallest table `source: auto` reads from its heap files.
    #[serde(default)]
    pub heap_threshold: Option<u64>,
    /// How the heap path makes the files hold every change made before
    /// the load (default: `auto`), as `--heap-sync`.
    #[serde(default)]
    pub heap_sync: HeapSync,
    /// The server's data directory as the store server sees it.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Several GPUs: `all`, or ordinals such as `0,1` (overrides
    /// `device`); the registry keeps the list it resolved, so refreshes use
    /// the same GPUs.
    #[serde(default)]
    pub devices: Option<String>,
    /// `optimal` (default), `numa` or `system`: which GPUs may read the
    /// heap files with GPU-Direct (`--gpu-selection`).
    #[serde(default)]
    pub gpu_selection: Option<String>,
    /// `--manual-optimal-gpus`, e.g. `nvme3=gpu2:gpu3,/mnt/nfs=gpu1`.
    #[serde(default)]
    pub manual_optimal_gpus: Option<String>,
}

impl LoadSpec {
    /// A spec with the defaults for everything but the table and connection.
    pub fn new(table: impl Into<String>, dsn: impl Into<String>) -> LoadSpec {
        LoadSpec {
            table: table.into(),
            name: None,
            dsn: dsn.into(),
            device: 0,
            source: Source::Auto,
            columns: None,
            auto_refresh_seconds: None,
            parallel: None,
            threads: None,
            chunk_mib: None,
            heap_threshold: None,
            heap_sync: HeapSync::Auto,
            data_dir: None,
            devices: None,
            gpu_selection: None,
            manual_optimal_gpus: None,
        }
    }

    /// The name the table gets in the store.
    pub fn store_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.table)
    }
}

impl fmt::Debug for LoadSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadSpec")
            .field("table", &self.table)
            .field("name", &self.name)
            .field("dsn", &"<not shown>")
            .field("device", &self.device)
            .field("source", &self.source)
            .field("columns", &self.columns)
            .field("auto_refresh_seconds", &self.auto_refresh_seconds)
            .field("parallel", &self.parallel)
            .field("threads", &self.threads)
            .field("chunk_mib", &self.chunk_mib)
            .field("heap_threshold", &self.heap_threshold)
            .field("heap_sync", &self.heap_sync)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// One request (the `op` field names it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Load a table under a new name: answers [`RevisionInfo`].
    Load {
        /// The table, connection and options.
        spec: Box<LoadSpec>,
    },
    /// Rebuild when the table has changed: answers [`RefreshOutcome`].
    Refresh {
        /// The table's name in the store.
        name: String,
    },
    /// Remove a table: answers [`DropOutcome`].
    Drop {
        /// The table's name in the store.
        name: String,
    },
    /// Every table and held revision: answers [`ListReport`]. `stale`
    /// (default true) checks each table against PostgreSQL.
    List {
        /// Whether to ask PostgreSQL if each table changed.
        #[serde(default = "yes")]
        stale: bool,
    },
    /// The current revision's manifest, not held: valid until the next
    /// refresh or drop.
    Export {
        /// The table's name in the store.
        name: String,
    },
    /// The current revision's manifest, held for this connection until
    /// `release` or disconnect.
    Attach {
        /// The table's name in the store.
        name: String,
    },
    /// Give back one attachment of this connection: answers
    /// `{"released": true}`.
    Release {
        /// The table's name in the store.
        name: String,
        /// The revision attached.
        revision: u64,
    },
    /// Stop the server (frees everything, removes the socket).
    Shutdown,
}

fn yes() -> bool {
    true
}

/// A request as sent: the version and the request's fields.
#[derive(Serialize)]
struct RequestLine<'a> {
    v: u32,
    #[serde(flatten)]
    request: &'a Request,
}

/// The error object of a failed response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    /// What kind of failure, for programs to act on.
    pub kind: ErrorKind,
    /// The error in words, one line.
    pub message: String,
}

/// A response as sent: `ok` with `result`, or `error`.
#[derive(Debug, Serialize, Deserialize)]
struct ResponseLine {
    v: u32,
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<WireError>,
}

/// One revision of a table, as `load`, `refresh` and `list` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevisionInfo {
    /// The table's name in the store.
    pub name: String,
    /// The table as given at load.
    pub table: String,
    /// Counts up from 1 with each rebuild of the table.
    pub revision: u64,
    /// Whether this is the table's current revision (false: an older one
    /// kept while clients are attached, or one of a dropped table).
    pub current: bool,
    /// `gpu` (device memory, CUDA IPC) or `host` (host memory; tests).
    pub backend: String,
    /// The first of the devices holding it.
    pub device: usize,
    /// How the rows were read: `copy` or `heap`.
    pub source: String,
    /// Rows in the revision.
    pub rows: u64,
    /// Bytes of the revision's allocations on the device.
    pub device_bytes: u64,
    /// How long the load (or rebuild) took.
    pub load_seconds: f64,
    /// Unix time (seconds) the load finished.
    pub loaded_at: u64,
    /// WAL position of the load: the heap path's fence (no page read from
    /// the files is newer), else the WAL insert position read just before
    /// the snapshot was taken.
    pub lsn: String,
    /// `fence` or `wal_insert`: which of the two `lsn` is.
    pub lsn_kind: String,
    /// Heap path: pages read from the files, pages read through COPY
    /// (not all-visible, or changed after the snapshot), and on a refresh
    /// pages unchanged since the previous revision, whose rows were copied
    /// from it on the device instead of being read (with their rows).
    #[serde(default)]
    pub pages_read: u64,
    /// Heap path: pages read through COPY (see `pages_read`).
    #[serde(default)]
    pub pages_copied: u64,
    /// Refresh: pages unchanged since the previous revision (see `pages_read`).
    #[serde(default)]
    pub pages_kept: u64,
    /// Refresh: the rows of `pages_kept`, copied on the device.
    #[serde(default)]
    pub rows_kept: u64,
    /// Clients attached to this revision.
    pub attached: usize,
    /// Whether the table changed since the load (`None`: not checked, or
    /// the check failed: see `stale_detail`).
    pub stale: Option<bool>,
    /// Why `stale` is `None`, when the check failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_detail: Option<String>,
    /// How often the table is checked and rebuilt in the background, if it is.
    pub auto_refresh_seconds: Option<u64>,
    /// The last background refresh's error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_refresh_error: Option<String>,
}

/// What `refresh` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshOutcome {
    /// False when the table had not changed: the same revision is kept.
    pub rebuilt: bool,
    /// The table's current revision after the refresh.
    pub info: RevisionInfo,
}

/// What `drop` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropOutcome {
    /// The table's name in the store.
    pub name: String,
    /// Device bytes freed at once.
    pub freed_bytes: u64,
    /// Bytes still held by attached clients, freed when they release.
    pub held_bytes: u64,
}

/// What `list` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReport {
    /// `gpu` or `host`, as in each revision.
    pub backend: String,
    /// Current revisions first (by name), then older revisions still held.
    pub revisions: Vec<RevisionInfo>,
    /// Names being loaded right now.
    pub loading: Vec<String>,
    /// Device bytes of every revision alive (held ones included).
    pub used_bytes: u64,
    /// The server's `--memory-limit` in bytes, if it has one.
    pub memory_limit: Option<u64>,
}

/// Writes `request` as one line.
pub fn encode_request(request: &Request) -> String {
    let line = RequestLine {
        v: PROTOCOL_VERSION,
        request,
    };
    // A Request always serializes (no maps with non-string keys).
    let mut s = serde_json::to_string(&line).unwrap_or_default();
    s.push('\n');
    s
}

/// Parses one request line: the version first, so a client of another
/// version gets `version` rather than a confusing parse error.
pub fn decode_request(line: &str) -> Result<Request, StoreError> {
    let value: Value = serde_json::from_str(line)
        .map_err(|e| StoreError::BadRequest(format!("not a JSON object: {e}")))?;
    let v = value
        .get("v")
        .ok_or_else(|| StoreError::BadRequest("no protocol version \"v\"".into()))?;
    match v.as_u64() {
        Some(n) if n == u64::from(PROTOCOL_VERSION) => {}
        Some(n) => {
            return Err(StoreError::Version {
                got: n,
                supported: PROTOCOL_VERSION,
            })
        }
        None => {
            return Err(StoreError::BadRequest(format!(
                "\"v\" is not a number: {v}"
            )))
        }
    }
    serde_json::from_value(value).map_err(|e| StoreError::BadRequest(e.to_string()))
}

/// A success line carrying `result`.
pub fn encode_ok(result: Value) -> String {
    encode_response(ResponseLine {
        v: PROTOCOL_VERSION,
        ok: true,
        result: Some(result),
        error: None,
    })
}

/// A success line whose result is `json`, one JSON value rendered before
/// (a revision's manifest, rendered once when the revision is built rather
/// than at every attach).
pub fn encode_ok_rendered(json: &str) -> String {
    format!("{{\"v\":{PROTOCOL_VERSION},\"ok\":true,\"result\":{json}}}\n")
}

/// A failure line carrying the error's kind and one-line message.
pub fn encode_error(e: &StoreError) -> String {
    encode_response(ResponseLine {
        v: PROTOCOL_VERSION,
        ok: false,
        result: None,
        error: Some(WireError {
            kind: e.kind(),
            message: e.one_line(),
        }),
    })
}

fn encode_response(r: ResponseLine) -> String {
    // Values and strings always serialize.
    let mut s = serde_json::to_string(&r).unwrap_or_default();
    s.push('\n');
    s
}

/// Parses one response line into its result, or the server's error as
/// [`StoreError::Remote`].
pub fn decode_response(line: &str) -> Result<Value, StoreError> {
    let r: ResponseLine = serde_json::from_str(line)
        .map_err(|e| StoreError::BadRequest(format!("unreadable response from the server: {e}")))?;
    if r.v != PROTOCOL_VERSION {
        return Err(StoreError::Version {
            got: u64::from(r.v),
            supported: PROTOCOL_VERSION,
        });
    }
    match (r.ok, r.result, r.error) {
        (true, Some(result), _) => Ok(result),
        (false, _, Some(e)) => Err(StoreError::Remote {
            kind: e.kind,
            message: e.message,
        }),
        _ => Err(StoreError::BadRequest(
            "response with neither result nor error".into(),
        )),
    }
}

/// Reads one line of at most `max` bytes; `None` at the end of the
/// stream. A longer line is an error (the peer is not speaking the
/// protocol).
pub fn read_line(reader: &mut impl BufRead, max: u64) -> Result<Option<String>, StoreError> {
    let mut buf = Vec::new();
    let n = reader
        .by_ref()
        .take(max + 1)
        .read_until(b'\n', &mut buf)
        .map_err(|e| StoreError::io("reading from the store socket", e))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        if n as u64 > max {
            return Err(StoreError::BadRequest(format!(
                "line longer than {max} bytes"
            )));
        }
        // The peer closed the stream in the middle of a line.
        return Ok(None);
    }
    buf.pop();
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| StoreError::BadRequest("line is not UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_with_the_version() {
        let mut spec = LoadSpec::new("public.\"My T\"", "host=/tmp password=secret");
        spec.columns = Some(vec!["a".into()]);
        spec.source = Source::Heap;
        for r in [
            Request::Load {
                spec: Box::new(spec),
            },
            Request::Refresh { name: "t".into() },
            Request::Drop { name: "t".into() },
            Request::List { stale: false },
            Request::Export { name: "t".into() },
            Request::Attach { name: "t".into() },
            Request::Release {
                name: "t".into(),
                revision: 3,
            },
            Request::Shutdown,
        ] {
            let line = encode_request(&r);
            assert!(line.starts_with("{\"v\":1,\"op\":"), "{line}");
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(decode_request(line.trim_end()).unwrap(), r);
        }
        // The source travels by name, as before it was the export's type.
        let line = encode_request(&Request::Load {
            spec: Box::new(LoadSpec {
                source: Source::Heap,
                ..LoadSpec::new("t", "x")
            }),
        });
        assert!(line.contains("\"source\":\"heap\""), "{line}");
        let r =
            decode_request(r#"{"v":1,"op":"load","spec":{"table":"t","dsn":"x","source":"copy"}}"#)
                .unwrap();
        assert!(matches!(r, Request::Load { spec } if spec.source == Source::Copy));
        // So does the way to make the heap files current, by the CLI's words.
        let line = encode_request(&Request::Load {
            spec: Box::new(LoadSpec {
                heap_sync: HeapSync::BufferCache,
                ..LoadSpec::new("t", "x")
            }),
        });
        assert!(line.contains("\"heap_sync\":\"buffercache\""), "{line}");
        for (word, sync) in [
            ("auto", HeapSync::Auto),
            ("checkpoint", HeapSync::Checkpoint),
            ("buffercache", HeapSync::BufferCache),
            ("wal", HeapSync::Wal),
        ] {
            let r = decode_request(&format!(
                r#"{{"v":1,"op":"load","spec":{{"table":"t","dsn":"x","heap_sync":"{word}"}}}}"#
            ))
            .unwrap();
            assert!(
                matches!(r, Request::Load { spec } if spec.heap_sync == sync),
                "{word}"
            );
        }
        assert!(decode_request(
            r#"{"v":1,"op":"load","spec":{"table":"t","dsn":"x","heap_sync":"later"}}"#
        )
        .is_err());
        // Defaults: list checks staleness, a minimal load spec.
        assert_eq!(
            decode_request(r#"{"v":1,"op":"list"}"#).unwrap(),
            Request::List { stale: true }
        );
        let r = decode_request(r#"{"v":1,"op":"load","spec":{"table":"t","dsn":"x"}}"#).unwrap();
        assert_eq!(
            r,
            Request::Load {
                spec: Box::new(LoadSpec::new("t", "x"))
            }
        );
    }

    #[test]
    fn a_rendered_result_reads_back_as_the_value() {
        let value = serde_json::json!({"name": "lo", "columns": [{"rows": 3, "dtype": "int32"}], "x": null});
        let line = encode_ok_rendered(&serde_json::to_string(&value).unwrap());
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        assert_eq!(line, encode_ok(value.clone()));
        assert_eq!(decode_response(line.trim_end()).unwrap(), value);
    }

    #[test]
    fn bad_requests_are_typed() {
        let kind = |line: &str| decode_request(line).unwrap_err().kind();
        assert_eq!(kind("not json"), ErrorKind::BadRequest);
        assert_eq!(kind(r#"{"op":"list"}"#), ErrorKind::BadRequest);
        assert_eq!(kind(r#"{"v":2,"op":"list"}"#), ErrorKind::Version);
        assert_eq!(kind(r#"{"v":1,"op":"fly"}"#), ErrorKind::BadRequest);
        assert_eq!(kind(r#"{"v":1,"op":"drop"}"#), ErrorKind::BadRequest);
        let e = decode_request(r#"{"v":7,"op":"list"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "protocol version 7 is not supported: this side speaks version 1"
        );
    }

    #[test]
    fn responses_round_trip() {
        let v = decode_response(encode_ok(serde_json::json!({"a": 1})).trim_end()).unwrap();
        assert_eq!(v["a"], 1);
        let e = decode_response(encode_error(&StoreError::UnknownTable("x".into())).trim_end())
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnknownTable);
        assert_eq!(e.to_string(), "no table named \"x\" in the store");
        // A kind from a newer server still parses.
        let e = decode_response(r#"{"v":1,"ok":false,"error":{"kind":"new_thing","message":"m"}}"#)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Other);
    }

    #[test]
    fn the_dsn_is_never_in_debug_output() {
        let spec = LoadSpec::new("t", "host=x password=hunter2");
        assert!(!format!("{spec:?}").contains("hunter2"));
    }

    #[test]
    fn lines_are_bounded() {
        let mut r = std::io::Cursor::new(b"{\"a\":1}\npartial".to_vec());
        assert_eq!(
            read_line(&mut r, 100).unwrap().as_deref(),
            Some("{\"a\":1}")
        );
        assert_eq!(read_line(&mut r, 100).unwrap(), None);
        assert_eq!(read_line(&mut r, 100).unwrap(), None);
        let mut r = std::io::Cursor::new(vec![b'x'; 50]);
        let e = read_line(&mut r, 10).unwrap_err();
        assert_eq!(e.to_string(), "bad request: line longer than 10 bytes");
    }
}
