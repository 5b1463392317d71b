//! Named tables and their revisions, memory accounting and attachments.
//!
//! A table's current revision is swapped in whole under the lock, after it
//! was built without it, so readers see the old revision or the new one,
//! never half of one. A revision that is no longer current lives on while
//! clients hold [`Attachment`]s to it and is freed with the last one; the
//! bytes of every revision alive count against the memory limit, so what
//! `list` shows is what the device holds.
//!
//! ```no_run
//! use std::sync::Arc;
//! use gpupg_store::{HostBackend, LoadSpec, Registry};
//!
//! # fn main() -> Result<(), gpupg_store::StoreError> {
//! let registry = Registry::new(Arc::new(HostBackend::default()), Some(1 << 30));
//! let info = registry.load(LoadSpec::new("lineorder", "host=/tmp dbname=ssb"))?;
//! let (attachment, manifest) = registry.attach(&info.name)?;
//! // ... a refresh now builds revision 2; revision 1 stays until:
//! drop(attachment);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gpupg_export::DeviceChoice;
use gpupg_source::ConnectConfig;

use crate::backend::{Backend, LoadedTable};
use crate::error::StoreError;
use crate::freshness::{self, Fingerprint, Observation};
use crate::manifest::Manifest;
use crate::protocol::{DropOutcome, ListReport, LoadSpec, RefreshOutcome, RevisionInfo};
use crate::request::{export_request, field_message};

/// Longest store name accepted.
const MAX_NAME_CHARS: usize = 256;

/// The tables of one server.
pub struct Registry {
    backend: Arc<dyn Backend>,
    memory_limit: Option<u64>,
    accounting: Arc<Accounting>,
    state: Mutex<State>,
    /// Set at shutdown: loads in progress stop, new ones are refused.
    cancel: AtomicBool,
    next_table_id: AtomicU64,
}

/// Bytes of every committed revision alive.
#[derive(Debug, Default)]
struct Accounting {
    used: AtomicU64,
}

#[derive(Default)]
struct State {
    tables: BTreeMap<String, Table>,
    /// Names being loaded (reserved, so two loads of one name cannot race).
    loading: BTreeSet<String>,
    /// Revisions no longer current, alive while clients hold them.
    retired: Vec<Weak<Revision>>,
}

struct Table {
    /// Tells a table from a later one loaded under the same name.
    id: u64,
    spec: LoadSpec,
    current: Arc<Revision>,
    /// Held by a refresh from its change check to its swap: refreshes of
    /// one table run one at a time, and the second usually finds nothing
    /// changed.
    refreshing: Arc<Mutex<()>>,
    /// When the background refresh checks next.
    next_check: Option<Instant>,
    auto_refresh_error: Option<String>,
}

/// One loaded revision: its memory, what it was loaded from, its manifest.
pub struct Revision {
    info: RevisionInfo,
    fingerprint: Fingerprint,
    manifest: Manifest,
    /// The manifest as JSON, rendered once: attach sends it as it is.
    manifest_json: Arc<str>,
    attached: AtomicUsize,
    /// Set once the revision is in the registry: its bytes count until it
    /// is dropped.
    counted_in: OnceLock<Arc<Accounting>>,
    // Last: the memory is freed after the accounting above is settled.
    resident: LoadedTable,
}

impl Revision {
    fn bytes(&self) -> u64 {
        self.info.device_bytes
    }

    /// The revision as `list` shows it (attachments as of now).
    fn info(&self, current: bool) -> RevisionInfo {
        RevisionInfo {
            current,
            attached: self.attached.load(Ordering::SeqCst),
            ..self.info.clone()
        }
    }
}

impl Drop for Revision {
    fn drop(&mut self) {
        if let Some(a) = self.counted_in.get() {
            a.used.fetch_sub(self.info.device_bytes, Ordering::SeqCst);
        }
    }
}

/// A client's hold on one revision: it stays in memory, even after a
/// refresh or drop, until every attachment to it is dropped.
pub struct Attachment {
    revision: Arc<Revision>,
}

impl Attachment {
    fn new(revision: Arc<Revision>) -> Attachment {
        revision.attached.fetch_add(1, Ordering::SeqCst);
        Attachment { revision }
    }

    /// The table's store name.
    pub fn name(&self) -> &str {
        &self.revision.info.name
    }

    /// The revision held.
    pub fn revision(&self) -> u64 {
        self.revision.info.revision
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.revision.attached.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Takes a name out of `loading` when its load ends, however it ends.
struct LoadingGuard<'a> {
    registry: &'a Registry,
    name: String,
}

impl Drop for LoadingGuard<'_> {
    fn drop(&mut self) {
        self.registry.lock().loading.remove(&self.name);
    }
}

impl Registry {
    /// An empty registry loading through `backend`, refusing loads that
    /// would hold more than `memory_limit` bytes in all.
    pub fn new(backend: Arc<dyn Backend>, memory_limit: Option<u64>) -> Registry {
        Registry {
            backend,
            memory_limit,
            accounting: Arc::default(),
            state: Mutex::default(),
            cancel: AtomicBool::new(false),
            next_table_id: AtomicU64::new(1),
        }
    }

    /// `gpu` or `host`.
    pub fn backend_kind(&self) -> &'static str {
        self.backend.kind()
    }

    /// Bytes of every revision alive (held ones included).
    pub fn used_bytes(&self) -> u64 {
        self.accounting.used.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave the maps inconsistent: every
        // change is a single insert, remove or swap.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads `spec` as revision 1 of a new table.
    pub fn load(&self, mut spec: LoadSpec) -> Result<RevisionInfo, StoreError> {
        let name = spec.store_name().to_string();
        check_name(&name)?;
        if self.cancel.load(Ordering::SeqCst) {
            return Err(StoreError::ShuttingDown);
        }
        self.resolve_devices(&mut spec)?;
        let connect = connect_of(&spec)?;
        {
            let mut st = self.lock();
            if st.tables.contains_key(&name) || st.loading.contains(&name) {
                return Err(StoreError::AlreadyLoaded(name));
            }
            st.loading.insert(name.clone());
        }
        let _loading = LoadingGuard {
            registry: self,
            name: name.clone(),
        };
        let observation = freshness::observe(&connect, &spec.table)?;
        let revision = self.build(&spec, &name, 1, observation, None)?;
        let mut st = self.lock();
        self.commit(&mut st, &name, &revision)?;
        let next_check = spec
            .auto_refresh_seconds
            .map(|s| Instant::now() + Duration::from_secs(s));
        st.tables.insert(
            name,
            Table {
                id: self.next_table_id.fetch_add(1, Ordering::Relaxed),
                spec,
                current: revision.clone(),
                refreshing: Arc::default(),
                next_check,
                auto_refresh_error: None,
            },
        );
        Ok(revision.info(true))
    }

    /// Rebuilds `name` when its table changed since the current revision
    /// was loaded; otherwise returns that revision at the cost of one
    /// catalog query.
    pub fn refresh(&self, name: &str) -> Result<RefreshOutcome, StoreError> {
        let (id, refreshing, spec) = {
            let st = self.lock();
            let t = st
                .tables
                .get(name)
                .ok_or_else(|| StoreError::UnknownTable(name.to_string()))?;
            (t.id, t.refreshing.clone(), t.spec.clone())
        };
        let _one_at_a_time = refreshing.lock().unwrap_or_else(|p| p.into_inner());
        // Another refresh may have swapped while this one waited.
        let current = self.current_of(name, id)?;
        let observation = freshness::observe(&connect_of(&spec)?, &spec.table)?;
        if observation.fingerprint == current.fingerprint {
            let mut info = current.info(true);
            info.stale = Some(false);
            return Ok(RefreshOutcome {
                rebuilt: false,
                info,
            });
        }
        if self.cancel.load(Ordering::SeqCst) {
            return Err(StoreError::ShuttingDown);
        }
        let revision = self.build(
            &spec,
            name,
            current.info.revision + 1,
            observation,
            Some(&current),
        )?;
        let mut st = self.lock();
        // Dropped (or dropped and loaded again) while this one built.
        if st.tables.get(name).is_none_or(|t| t.id != id) {
            return Err(StoreError::UnknownTable(name.to_string()));
        }
        self.commit(&mut st, name, &revision)?;
        let t = st
            .tables
            .get_mut(name)
            .ok_or_else(|| StoreError::UnknownTable(name.to_string()))?;
        let old = std::mem::replace(&mut t.current, revision.clone());
        st.retired.push(Arc::downgrade(&old));
        drop(st);
        // Freed here (outside the lock) unless a client holds it.
        drop(old);
        Ok(RefreshOutcome {
            rebuilt: true,
            info: revision.info(true),
        })
    }

    /// Removes `name`; its memory is freed now, or when the last client
    /// attached to it releases.
    pub fn drop_table(&self, name: &str) -> Result<DropOutcome, StoreError> {
        let mut st = self.lock();
        let table = st
            .tables
            .remove(name)
            .ok_or_else(|| StoreError::UnknownTable(name.to_string()))?;
        let revision = table.current;
        let bytes = revision.bytes();
        let held = revision.attached.load(Ordering::SeqCst) > 0;
        st.retired.push(Arc::downgrade(&revision));
        drop(st);
        drop(revision);
        Ok(DropOutcome {
            name: name.to_string(),
            freed_bytes: if held { 0 } else { bytes },
            held_bytes: if held { bytes } else { 0 },
        })
    }

    /// The current revision of `name`.
    fn current(&self, name: &str) -> Result<Arc<Revision>, StoreError> {
        let st = self.lock();
        st.tables
            .get(name)
            .map(|t| t.current.clone())
            .ok_or_else(|| StoreError::UnknownTable(name.to_string()))
    }

    /// The current revision's manifest, not held.
    pub fn manifest(&self, name: &str) -> Result<Manifest, StoreError> {
        Ok(self.current(name)?.manifest.clone())
    }

    /// The current revision's manifest as JSON, not held.
    pub fn manifest_json(&self, name: &str) -> Result<Arc<str>, StoreError> {
        Ok(self.current(name)?.manifest_json.clone())
    }

    /// As [`Self::attach`], with the manifest as JSON (what the server
    /// sends).
    pub fn attach_json(&self, name: &str) -> Result<(Attachment, Arc<str>), StoreError> {
        self.attach_with(name, |r| r.manifest_json.clone())
    }

    /// Holds the current revision of `name` and returns its manifest.
    pub fn attach(&self, name: &str) -> Result<(Attachment, Manifest), StoreError> {
        self.attach_with(name, |r| r.manifest.clone())
    }

    /// Holds the current revision of `name` (counted as attached before
    /// the lock is let go, so a drop at the same moment sees it held) and
    /// returns `what` of it.
    fn attach_with<T>(
        &self,
        name: &str,
        what: impl FnOnce(&Revision) -> T,
    ) -> Result<(Attachment, T), StoreError> {
        let st = self.lock();
        let t = st
            .tables
            .get(name)
            .ok_or_else(|| StoreError::UnknownTable(name.to_string()))?;
        Ok((Attachment::new(t.current.clone()), what(&t.current)))
    }

    /// Every table's current revision (checked against PostgreSQL when
    /// `check_stale`), then older revisions still held.
    pub fn list(&self, check_stale: bool) -> ListReport {
        let (current, retired, loading) = {
            let mut st = self.lock();
            st.retired.retain(|w| w.strong_count() > 0);
            let current: Vec<(Arc<Revision>, LoadSpec, Option<String>)> = st
                .tables
                .values()
                .map(|t| {
                    (
                        t.current.clone(),
                        t.spec.clone(),
                        t.auto_refresh_error.clone(),
                    )
                })
                .collect();
            let retired: Vec<Arc<Revision>> = st.retired.iter().filter_map(Weak::upgrade).collect();
            (current, retired, st.loading.iter().cloned().collect())
        };
        // One connection per table, in parallel: list stays quick with
        // many tables.
        let mut revisions: Vec<RevisionInfo> = std::thread::scope(|s| {
            let checks: Vec<_> = current
                .iter()
                .map(|(rev, spec, error)| {
                    s.spawn(move || {
                        let mut info = rev.info(true);
                        info.auto_refresh_error = error.clone();
                        info.stale = None;
                        if check_stale {
                            match connect_of(spec).and_then(|c| freshness::observe(&c, &spec.table))
                            {
                                Ok(o) => info.stale = Some(o.fingerprint != rev.fingerprint),
                                Err(e) => info.stale_detail = Some(e.one_line()),
                            }
                        }
                        info
                    })
                })
                .collect();
            checks
                .into_iter()
                .zip(&current)
                .map(|(h, (rev, _, _))| h.join().unwrap_or_else(|_| rev.info(true)))
                .collect()
        });
        revisions.extend(retired.iter().map(|r| RevisionInfo {
            stale: None,
            ..r.info(false)
        }));
        ListReport {
            backend: self.backend.kind().to_string(),
            revisions,
            loading,
            used_bytes: self.used_bytes(),
            memory_limit: self.memory_limit,
        }
    }

    /// Refreshes, until `stop` is set, every table loaded with
    /// `auto_refresh_seconds` each time its interval passes; `log` gets a
    /// line for each rebuild and failure.
    pub fn run_auto_refresh(&self, stop: &AtomicBool, log: &dyn Fn(&str)) {
        while !stop.load(Ordering::SeqCst) && !self.cancel.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
            for name in self.due_for_check(Instant::now()) {
                let result = self.refresh(&name);
                let error = match &result {
                    Ok(r) if r.rebuilt => {
                        log(&format!(
                            "auto-refresh: {name} changed, now revision {} ({} rows)",
                            r.info.revision, r.info.rows
                        ));
                        None
                    }
                    Ok(_) => None,
                    Err(StoreError::UnknownTable(_)) => continue,
                    Err(e) => {
                        log(&format!("auto-refresh of {name} failed: {}", e.one_line()));
                        Some(e.one_line())
                    }
                };
                if let Some(t) = self.lock().tables.get_mut(&name) {
                    t.auto_refresh_error = error;
                }
            }
        }
    }

    /// Names whose background check is due, with their next check set.
    fn due_for_check(&self, now: Instant) -> Vec<String> {
        let mut st = self.lock();
        let mut due = Vec::new();
        for (name, t) in st.tables.iter_mut() {
            if let (Some(at), Some(secs)) = (t.next_check, t.spec.auto_refresh_seconds) {
                if at <= now {
                    t.next_check = Some(now + Duration::from_secs(secs));
                    due.push(name.clone());
                }
            }
        }
        due
    }

    /// Stops loads in progress, refuses new ones and frees every table
    /// (revisions still attached go with their attachments).
    pub fn shut_down(&self) {
        self.cancel.store(true, Ordering::SeqCst);
        let tables = std::mem::take(&mut self.lock().tables);
        drop(tables);
    }

    /// Checks the devices of `spec` and writes `devices: all` as the list
    /// it means here (refreshes then load onto the same GPUs).
    fn resolve_devices(&self, spec: &mut LoadSpec) -> Result<(), StoreError> {
        let Some(text) = &spec.devices else {
            return self.backend.check_device(spec.device);
        };
        let choice: DeviceChoice = text
            .parse()
            .map_err(|e| StoreError::BadRequest(field_message(&e, spec)))?;
        let count = self.backend.device_count();
        let devices = choice
            .resolve(count.clone())
            .map_err(|detail| StoreError::BadDevice {
                device: match (&choice, &count) {
                    (DeviceChoice::List(l), Ok(n)) => {
                        l.iter().copied().find(|d| d >= n).unwrap_or(0)
                    }
                    _ => 0,
                },
                detail: field_message(&detail, spec),
            })?;
        for &d in &devices {
            self.backend.check_device(d)?;
        }
        spec.device = devices.first().copied().unwrap_or(0);
        spec.devices = Some(DeviceChoice::List(devices).to_string());
        Ok(())
    }

    fn current_of(&self, name: &str, id: u64) -> Result<Arc<Revision>, StoreError> {
        let st = self.lock();
        st.tables
            .get(name)
            .filter(|t| t.id == id)
            .map(|t| t.current.clone())
            .ok_or_else(|| StoreError::UnknownTable(name.to_string()))
    }

    /// Loads a revision, without the lock. A refresh passes the current
    /// revision as `prior`: pages of the heap files unchanged since are
    /// not read again, their rows are copied from it.
    fn build(
        &self,
        spec: &LoadSpec,
        name: &str,
        revision: u64,
        observation: Observation,
        prior: Option<&Revision>,
    ) -> Result<Arc<Revision>, StoreError> {
        let started = Instant::now();
        let mut req = export_request(spec, &self.cancel)?;
        let prior = prior.map(|r| &r.resident);
        req.prior = prior.map(|r| &r.pages);
        // Checked while the columns are built, so a table that does not fit
        // fails at once; checked again at commit, where loads that ran at
        // the same time are counted too.
        let in_use = self.used_bytes();
        if let Some(limit) = self.memory_limit {
            req.device_limit = Some(limit.saturating_sub(in_use));
        }
        let resident = self.backend.load(name, &req, prior).map_err(|e| match e {
            StoreError::MemoryLimit { needed, .. } => StoreError::MemoryLimit {
                name: name.to_string(),
                needed,
                in_use,
                limit: self.memory_limit.unwrap_or(needed),
            },
            e => e,
        })?;
        let heap = resident.report.heap.as_ref();
        let (lsn, lsn_kind) = match &resident.report.heap {
            Some(h) => (h.fence_lsn.clone(), "fence"),
            None => (observation.wal_lsn.clone(), "wal_insert"),
        };
        let info = RevisionInfo {
            name: name.to_string(),
            table: spec.table.clone(),
            revision,
            current: true,
            backend: self.backend.kind().to_string(),
            device: resident.device,
            source: resident.report.source.clone(),
            rows: resident.rows,
            device_bytes: resident.bytes(),
            load_seconds: started.elapsed().as_secs_f64(),
            loaded_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            lsn,
            lsn_kind: lsn_kind.to_string(),
            pages_read: heap.map_or(0, |h| h.pages_direct),
            pages_copied: heap.map_or(0, |h| h.pages_fallback),
            pages_kept: heap.map_or(0, |h| h.pages_kept),
            rows_kept: heap.map_or(0, |h| h.rows_kept),
            attached: 0,
            stale: Some(false),
            stale_detail: None,
            auto_refresh_seconds: spec.auto_refresh_seconds,
            auto_refresh_error: None,
        };
        let manifest = Manifest::describe(&info, &resident);
        Ok(Arc::new(Revision {
            info,
            fingerprint: observation.fingerprint,
            manifest_json: serde_json::to_string(&manifest)
                .map_err(|e| StoreError::Internal(format!("rendering the manifest: {e}")))?
                .into(),
            manifest,
            attached: AtomicUsize::new(0),
            counted_in: OnceLock::new(),
            resident,
        }))
    }

    /// Counts `revision`'s bytes, or refuses it when they would pass the
    /// limit (it is then dropped by the caller, after the lock).
    fn commit(&self, _st: &mut State, name: &str, revision: &Revision) -> Result<(), StoreError> {
        // Checked under the lock: shut_down takes the tables under it too,
        // so nothing is committed after it.
        if self.cancel.load(Ordering::SeqCst) {
            return Err(StoreError::ShuttingDown);
        }
        let needed = revision.bytes();
        let in_use = self.used_bytes();
        if let Some(limit) = self.memory_limit {
            if in_use.saturating_add(needed) > limit {
                return Err(StoreError::MemoryLimit {
                    name: name.to_string(),
                    needed,
                    in_use,
                    limit,
                });
            }
        }
        self.accounting.used.fetch_add(needed, Ordering::SeqCst);
        // Built by this registry a moment ago and committed once.
        let _ = revision.counted_in.set(self.accounting.clone());
        Ok(())
    }
}

fn connect_of(spec: &LoadSpec) -> Result<ConnectConfig, StoreError> {
    ConnectConfig::resolve(Some(&spec.dsn))
        .map_err(|e| StoreError::BadRequest(format!("connection string: {e}")))
}

fn check_name(name: &str) -> Result<(), StoreError> {
    let why = if name.trim().is_empty() {
        "it is empty"
    } else if name.chars().count() > MAX_NAME_CHARS {
        "it is longer than 256 characters"
    } else if name.chars().any(char::is_control) {
        "it holds control characters"
    } else {
        return Ok(());
    };
    Err(StoreError::BadName {
        name: name.to_string(),
        why: why.into(),
    })
}
