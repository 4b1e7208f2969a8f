//! Where namespace documents and registered schemas are stored: a directory
//! of YAML files (one proxy, the embedded default; schemas in its `schemas/`
//! subdirectory) or PostgreSQL tables shared by many proxies. Either way the
//! registry holds raw documents and descriptor sets; the controller parses,
//! validates and plans them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use notify::RecursiveMode;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use prism_pii::SchemaVersion;

use super::migration::Migration;
use crate::config::PostgresRegistry;
use crate::error::ProxyError;

/// A stored document and where it came from.
#[derive(Debug, Clone)]
pub struct Stored {
    /// A file path, or `postgres:<schema>.namespaces/<name>`.
    pub source: String,
    pub yaml: String,
    /// Set while a `delete --purge` waits for every proxy to stop routing
    /// the namespace (shared registries only).
    pub deleting: Option<Deleting>,
}

/// A namespace marked as being deleted: each proxy stops routing it,
/// finishes its calls in flight, then acknowledges `revision` under
/// [`Deleting::ack_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleting {
    pub name: String,
    pub revision: u64,
}

impl Deleting {
    /// The acknowledgement key; migrations use the bare namespace name,
    /// which cannot contain a colon.
    pub fn ack_key(name: &str) -> String {
        format!("delete:{name}")
    }
}

/// What a registry holds right now.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub docs: Vec<Stored>,
    /// Entries that could not be read at all: `(source, why)`.
    pub unreadable: Vec<(String, String)>,
    /// The latest version of every registered schema.
    pub schemas: Vec<SchemaVersion>,
    /// Every stored migration, ended ones included.
    pub migrations: Vec<Migration>,
}

/// The proxies sharing a registry that have to acknowledge a switch: the
/// live ones, and which of them have.
#[derive(Debug, Default)]
pub struct Acks {
    /// Live proxies that have not acknowledged yet.
    pub waiting: Vec<String>,
    /// `(proxy, what it reported)`.
    pub acked: Vec<(String, String)>,
}

pub enum Registry {
    Directory(PathBuf),
    Postgres(Arc<PgRegistry>),
}

/// The PostgreSQL registry and the one connection it reads and writes
/// through, opened (and the table ensured) on first use and again only
/// after it closed: reloads come with every notification and resync.
pub struct PgRegistry {
    config: PostgresRegistry,
    client: tokio::sync::Mutex<Option<tokio_postgres::Client>>,
}

impl PgRegistry {
    async fn client(&self) -> Result<tokio::sync::MappedMutexGuard<'_, tokio_postgres::Client>, ProxyError> {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_none_or(tokio_postgres::Client::is_closed) {
            *slot = Some(pg_connect(&self.config).await?);
        }
        tokio::sync::MutexGuard::try_map(slot, Option::as_mut)
            .map_err(|_| ProxyError::Internal("registry connection missing".to_owned()))
    }
}

fn being_deleted(name: &str) -> ProxyError {
    ProxyError::FailedPrecondition(format!(
        "namespace {name} is being deleted; run `prismctl namespace delete {name} --purge` again to finish, then apply it"
    ))
}

fn unavailable(what: &str, err: impl std::fmt::Display) -> ProxyError {
    ProxyError::Unavailable(format!("namespace registry: {what}: {err}"))
}

impl Registry {
    pub fn postgres(config: PostgresRegistry) -> Self {
        Self::Postgres(Arc::new(PgRegistry { config, client: tokio::sync::Mutex::new(None) }))
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Directory(dir) => format!("directory {}", dir.display()),
            Self::Postgres(pg) => format!("postgres table {}.namespaces", pg.config.schema),
        }
    }

    pub async fn load(&self) -> Result<Snapshot, ProxyError> {
        match self {
            Self::Directory(dir) => {
                let mut snapshot = load_dir(dir).map_err(|e| unavailable(&format!("reading {}", dir.display()), e))?;
                snapshot.schemas = dir_schemas(dir, None)?
                    .into_iter()
                    .fold(std::collections::BTreeMap::<String, SchemaVersion>::new(), |mut latest, v| {
                        if latest.get(&v.name).is_none_or(|cur| cur.version < v.version) {
                            latest.insert(v.name.clone(), v);
                        }
                        latest
                    })
                    .into_values()
                    .collect();
                snapshot.migrations = dir_migrations(dir)?;
                Ok(snapshot)
            }
            Self::Postgres(pg) => pg_load(pg).await,
        }
    }

    /// Every stored version of schema `name`, oldest first.
    pub async fn schema_versions(&self, name: &str) -> Result<Vec<SchemaVersion>, ProxyError> {
        match self {
            Self::Directory(dir) => dir_schemas(dir, Some(name)),
            Self::Postgres(pg) => pg_schema_versions(pg, name).await,
        }
    }

    /// Stores `descriptor` as version `previous + 1` of schema `name`.
    /// Fails with `Conflict` if another version was stored since
    /// `previous` was read (another proxy pushed meanwhile).
    pub async fn put_schema(
        &self,
        name: &str,
        previous: u32,
        descriptor: &[u8],
        pushed_by: &str,
    ) -> Result<SchemaVersion, ProxyError> {
        let version = SchemaVersion {
            name: name.to_owned(),
            version: previous + 1,
            descriptor: bytes::Bytes::copy_from_slice(descriptor),
            pushed_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            pushed_by: pushed_by.to_owned(),
        };
        match self {
            Self::Directory(dir) => dir_put_schema(dir, &version).map(|()| version),
            Self::Postgres(pg) => pg_put_schema(pg, version).await,
        }
    }

    /// Stores `yaml` for namespace `name`, replacing the document at
    /// `current` (its source) if any. Returns the new source.
    pub async fn put(&self, name: &str, yaml: &str, current: Option<&str>) -> Result<String, ProxyError> {
        match self {
            Self::Directory(dir) => dir_put(dir, name, yaml, current),
            Self::Postgres(pg) => pg_put(pg, name, yaml).await,
        }
    }

    pub async fn delete(&self, name: &str, source: &str) -> Result<(), ProxyError> {
        match self {
            Self::Directory(_) => match std::fs::remove_file(source) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(unavailable(&format!("removing {source}"), e)),
            },
            Self::Postgres(pg) => pg_delete(pg, name).await,
        }
    }

    /// The migration of namespace `name`, if one was ever stored.
    pub async fn migration(&self, name: &str) -> Result<Option<Migration>, ProxyError> {
        match self {
            Self::Directory(dir) => Ok(dir_migrations(dir)?.into_iter().find(|m| m.namespace == name)),
            Self::Postgres(pg) => pg_migration(pg, name).await,
        }
    }

    /// Stores `migration` as the next revision of the stored one, if that
    /// is still revision `migration.revision` (0: none stored, or an ended
    /// one may be replaced by a new one of revision 0). With `doc`, the
    /// namespace document `(name, yaml, current source)` is stored in the
    /// same transaction, so every proxy sees both or neither. `notify`
    /// makes the proxies reload (a phase change, not a progress report).
    /// Fails with `Conflict` when someone else stored a revision meanwhile.
    pub async fn put_migration(
        &self,
        migration: &mut Migration,
        doc: Option<(&str, Option<&str>)>,
        notify: bool,
    ) -> Result<(), ProxyError> {
        let expected = migration.revision;
        migration.revision += 1;
        migration.updated_at = super::migration::now();
        let result = match self {
            Self::Directory(dir) => dir_put_migration(dir, migration, expected, doc),
            Self::Postgres(pg) => pg_put_migration(pg, migration, expected, doc, notify).await,
        };
        if result.is_err() {
            migration.revision = expected;
        }
        result
    }

    /// Marks namespace `name` as being deleted, so every proxy stops
    /// routing it and acknowledges the returned revision; `None` when the
    /// registry is not shared (this proxy is the only one routing it) or
    /// holds no such namespace. A mark left by a delete that did not finish
    /// is taken over.
    pub async fn mark_deleting(&self, name: &str) -> Result<Option<u64>, ProxyError> {
        match self {
            Self::Directory(_) => Ok(None),
            Self::Postgres(pg) => pg_set_deleting(pg, name, true).await,
        }
    }

    /// Undoes [`Registry::mark_deleting`]: the proxies route the namespace
    /// again.
    pub async fn unmark_deleting(&self, name: &str) -> Result<(), ProxyError> {
        match self {
            Self::Directory(_) => Ok(()),
            Self::Postgres(pg) => pg_set_deleting(pg, name, false).await.map(drop),
        }
    }

    /// Whether proxies other than this one may share the registry (then
    /// switches are acknowledged through it).
    pub fn shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Notes that proxy `id` is alive (shared registries only).
    pub async fn heartbeat(&self, id: &str) -> Result<(), ProxyError> {
        match self {
            Self::Directory(_) => Ok(()),
            Self::Postgres(pg) => {
                let client = pg.client().await?;
                client
                    .execute(
                        &format!(
                            "INSERT INTO {t} (id, seen) VALUES ($1, now()) ON CONFLICT (id) DO UPDATE SET seen = now()",
                            t = proxies_table(&pg.config)
                        ),
                        &[&id],
                    )
                    .await
                    .map_err(|e| unavailable("recording this proxy's heartbeat", e))?;
                Ok(())
            }
        }
    }

    /// Records that proxy `id` has done what revision `revision` under key
    /// `name` asked: a migration's step (the namespace name) or a deletion
    /// mark ([`Deleting::ack_key`]). Shared registries only.
    pub async fn ack(&self, name: &str, revision: u64, id: &str, detail: &str) -> Result<(), ProxyError> {
        match self {
            Self::Directory(_) => Ok(()),
            Self::Postgres(pg) => {
                let client = pg.client().await?;
                let revision = i64::try_from(revision).unwrap_or(i64::MAX);
                client
                    .execute(
                        &format!(
                            "INSERT INTO {t} (name, revision, proxy, detail) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (name, revision, proxy) DO UPDATE SET detail = EXCLUDED.detail",
                            t = acks_table(&pg.config)
                        ),
                        &[&name, &revision, &id, &detail],
                    )
                    .await
                    .map_err(|e| unavailable("acknowledging a registry change", e))?;
                Ok(())
            }
        }
    }

    /// Which live proxies (heard from within `lease`) have acknowledged
    /// revision `revision` of the migration of `name`.
    pub async fn acks(&self, name: &str, revision: u64, lease: Duration) -> Result<Acks, ProxyError> {
        match self {
            Self::Directory(_) => Ok(Acks::default()),
            Self::Postgres(pg) => {
                let client = pg.client().await?;
                let revision = i64::try_from(revision).unwrap_or(i64::MAX);
                let rows = client
                    .query(
                        &format!(
                            "SELECT p.id, a.detail FROM {p} p LEFT JOIN {a} a \
                             ON a.proxy = p.id AND a.name = $1 AND a.revision = $2 \
                             WHERE p.seen > now() - make_interval(secs => $3) ORDER BY p.id",
                            p = proxies_table(&pg.config),
                            a = acks_table(&pg.config)
                        ),
                        &[&name, &revision, &lease.as_secs_f64()],
                    )
                    .await
                    .map_err(|e| unavailable("reading acknowledgements", e))?;
                let mut acks = Acks::default();
                for row in rows {
                    let id: String = row.get(0);
                    match row.get::<_, Option<String>>(1) {
                        Some(detail) => acks.acked.push((id, detail)),
                        None => acks.waiting.push(id),
                    }
                }
                Ok(acks)
            }
        }
    }

    /// Watches for changes made by anyone (an editor, another proxy) and
    /// sends a signal for each; also signals periodically, so a missed
    /// event is caught up. Runs until the receiver is dropped.
    pub fn watch(&self, changed: mpsc::Sender<()>) -> Result<tokio::task::JoinHandle<()>, ProxyError> {
        match self {
            Self::Directory(dir) => watch_dir(dir.clone(), changed),
            Self::Postgres(pg) => Ok(tokio::spawn(pg_watch(pg.config.clone(), changed))),
        }
    }
}

// === directory ===

fn dir_put(dir: &Path, name: &str, yaml: &str, current: Option<&str>) -> Result<String, ProxyError> {
    let path = current
        .map(PathBuf::from)
        .filter(|p| p.parent() == Some(dir))
        .unwrap_or_else(|| dir.join(format!("{name}.yaml")));
    write_atomically(&path, yaml).map_err(|e| unavailable(&format!("writing {}", path.display()), e))?;
    Ok(path.display().to_string())
}

/// The subdirectory of the namespaces directory that holds migrations, one
/// `<namespace>.json` each.
const MIGRATION_DIR: &str = "migrations";

fn dir_migrations(dir: &Path) -> Result<Vec<Migration>, ProxyError> {
    let mut found: Vec<Migration> = dir_json_files(dir, MIGRATION_DIR)?;
    found.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    Ok(found)
}

/// Every `*.json` file of subdirectory `sub`, decoded (none if `sub` does
/// not exist).
fn dir_json_files<T: serde::de::DeserializeOwned>(dir: &Path, sub: &str) -> Result<Vec<T>, ProxyError> {
    let sub = dir.join(sub);
    let entries = match std::fs::read_dir(&sub) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unavailable(&format!("reading {}", sub.display()), e)),
    };
    let mut found = Vec::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bad = |why: String| unavailable(&format!("reading {}", path.display()), why);
        let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
        found.push(serde_json::from_str::<T>(&text).map_err(|e| bad(e.to_string()))?);
    }
    Ok(found)
}

/// A directory registry has one proxy, whose controller serializes the
/// steps of a migration; the revision check still refuses a stale update.
/// The migration is written before the document: a document is what
/// routes, and it must never be ahead of the state that explains it.
fn dir_put_migration(
    dir: &Path,
    migration: &Migration,
    expected: u64,
    doc: Option<(&str, Option<&str>)>,
) -> Result<(), ProxyError> {
    let stored = dir_migrations(dir)?.into_iter().find(|m| m.namespace == migration.namespace);
    check_revision(&migration.namespace, stored.as_ref().map(|m| (m.revision, m.phase.ended())), expected)?;
    let migrations = dir.join(MIGRATION_DIR);
    std::fs::create_dir_all(&migrations).map_err(|e| unavailable(&format!("creating {}", migrations.display()), e))?;
    let path = migrations.join(format!("{}.json", migration.namespace));
    let text = serde_json::to_string_pretty(migration).map_err(|e| ProxyError::Internal(e.to_string()))?;
    write_atomically(&path, &text).map_err(|e| unavailable(&format!("writing {}", path.display()), e))?;
    if let Some((yaml, current)) = doc {
        dir_put(dir, &migration.namespace, yaml, current)?;
    }
    Ok(())
}

/// Refuses an update made against another revision than the stored one
/// `(revision, ended)`. A new migration (expected 0) may replace an ended
/// one.
fn check_revision(name: &str, stored: Option<(u64, bool)>, expected: u64) -> Result<(), ProxyError> {
    let ok = match stored {
        None => expected == 0,
        Some((revision, ended)) => revision == expected || (expected == 0 && ended),
    };
    if ok {
        Ok(())
    } else {
        Err(ProxyError::Conflict(format!(
            "the migration of namespace {name} was changed meanwhile (by another command or proxy); check `prismctl migrate status {name}` and run the step again"
        )))
    }
}

fn load_dir(dir: &Path) -> std::io::Result<Snapshot> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut snapshot = Snapshot::default();
    for file in files {
        let source = file.display().to_string();
        match std::fs::read_to_string(&file) {
            Ok(yaml) => snapshot.docs.push(Stored { source, yaml, deleting: None }),
            Err(e) => snapshot.unreadable.push((source, e.to_string())),
        }
    }
    Ok(snapshot)
}

/// The subdirectory of the namespaces directory that holds schemas; it is
/// not a namespace document, so the namespace loader skips it.
const SCHEMA_DIR: &str = "schemas";

/// One stored schema version, as a JSON file `<name>.v<N>.json` (the name
/// percent-encoded, since it holds `/`).
#[derive(serde::Serialize, serde::Deserialize)]
struct SchemaFile {
    name: String,
    version: u32,
    descriptor_base64: String,
    pushed_at: String,
    pushed_by: String,
}

fn schema_file_name(name: &str, version: u32) -> String {
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("{encoded}.v{version}.json")
}

fn dir_schemas(dir: &Path, only: Option<&str>) -> Result<Vec<SchemaVersion>, ProxyError> {
    let files: Vec<SchemaFile> = dir_json_files(dir, SCHEMA_DIR)?;
    let mut versions = Vec::new();
    for file in files.into_iter().filter(|f| only.is_none_or(|n| n == f.name)) {
        let descriptor = STANDARD.decode(&file.descriptor_base64).map_err(|e| {
            unavailable(
                &format!("reading {}", dir.join(SCHEMA_DIR).join(schema_file_name(&file.name, file.version)).display()),
                e,
            )
        })?;
        versions.push(SchemaVersion {
            name: file.name,
            version: file.version,
            descriptor: descriptor.into(),
            pushed_at: file.pushed_at,
            pushed_by: file.pushed_by,
        });
    }
    versions.sort_by(|a, b| (&a.name, a.version).cmp(&(&b.name, b.version)));
    Ok(versions)
}

fn dir_put_schema(dir: &Path, v: &SchemaVersion) -> Result<(), ProxyError> {
    let schemas = dir.join(SCHEMA_DIR);
    std::fs::create_dir_all(&schemas).map_err(|e| unavailable(&format!("creating {}", schemas.display()), e))?;
    let path = schemas.join(schema_file_name(&v.name, v.version));
    if path.exists() {
        return Err(ProxyError::Conflict(format!(
            "schema {} version {} was pushed meanwhile; push again",
            v.name, v.version
        )));
    }
    let file = SchemaFile {
        name: v.name.clone(),
        version: v.version,
        descriptor_base64: STANDARD.encode(&v.descriptor),
        pushed_at: v.pushed_at.clone(),
        pushed_by: v.pushed_by.clone(),
    };
    let text = serde_json::to_string_pretty(&file).map_err(|e| ProxyError::Internal(e.to_string()))?;
    write_atomically(&path, &text).map_err(|e| unavailable(&format!("writing {}", path.display()), e))
}

/// Writes through a temporary file and a rename, so a reader (this proxy's
/// watcher, an operator's editor) never sees half a document. The
/// temporary name does not end in `.yaml`, so it is never loaded.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("namespace");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// How long file events settle before a reload: an editor's save is often
/// several events.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Reload the directory at least this often, whatever the events say.
const DIR_RESYNC: Duration = Duration::from_secs(30);

fn watch_dir(dir: PathBuf, changed: mpsc::Sender<()>) -> Result<tokio::task::JoinHandle<()>, ProxyError> {
    let events = changed.clone();
    let mut debouncer = notify_debouncer_full::new_debouncer(
        DEBOUNCE,
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            // Reading the directory to reload it raises access events of its
            // own; reacting to them would reload forever.
            if let Ok(batch) = result
                && batch.iter().any(|e| !matches!(e.event.kind, notify::EventKind::Access(_)))
            {
                let _ = events.try_send(());
            }
        },
    )
    .map_err(|e| unavailable("watching the namespaces directory", e))?;
    debouncer
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| unavailable(&format!("watching {}", dir.display()), e))?;
    Ok(tokio::spawn(async move {
        // The debouncer stops watching when dropped; keep it for the task's life.
        let _debouncer = debouncer;
        let mut tick = tokio::time::interval(DIR_RESYNC);
        tick.tick().await;
        loop {
            tick.tick().await;
            if changed.send(()).await.is_err() {
                return;
            }
        }
    }))
}

// === PostgreSQL ===

fn table(pg: &PostgresRegistry) -> String {
    format!("\"{}\".namespaces", pg.schema)
}

fn schema_table(pg: &PostgresRegistry) -> String {
    format!("\"{}\".schemas", pg.schema)
}

fn migrations_table(pg: &PostgresRegistry) -> String {
    format!("\"{}\".migrations", pg.schema)
}

fn proxies_table(pg: &PostgresRegistry) -> String {
    format!("\"{}\".proxies", pg.schema)
}

fn acks_table(pg: &PostgresRegistry) -> String {
    format!("\"{}\".migration_acks", pg.schema)
}

fn channel(pg: &PostgresRegistry) -> String {
    format!("prism_namespaces_{}", pg.schema)
}

async fn pg_connect(pg: &PostgresRegistry) -> Result<tokio_postgres::Client, ProxyError> {
    let mut config: tokio_postgres::Config =
        pg.url.parse().map_err(|e| ProxyError::Internal(format!("registry url: {e}")))?;
    config.connect_timeout(Duration::from_secs(5)).application_name("prism-proxy registry");
    let (client, connection) = config.connect(NoTls).await.map_err(|e| unavailable("connecting to postgres", e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "registry connection closed");
        }
    });
    ensure_table(pg, &client).await?;
    Ok(client)
}

async fn ensure_table(pg: &PostgresRegistry, client: &tokio_postgres::Client) -> Result<(), ProxyError> {
    // Proxies starting together would race on CREATE ... IF NOT EXISTS; the
    // advisory lock serializes them.
    let sql = format!(
        "BEGIN;
         SELECT pg_advisory_xact_lock(hashtext('prism-registry:{schema}'));
         CREATE SCHEMA IF NOT EXISTS \"{schema}\";
         CREATE TABLE IF NOT EXISTS {table} (
             name       text PRIMARY KEY,
             spec       text NOT NULL,
             revision   bigint NOT NULL DEFAULT 1,
             updated_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS {schemas} (
             name       text NOT NULL,
             version    integer NOT NULL,
             descriptor bytea NOT NULL,
             pushed_by  text NOT NULL,
             pushed_at  timestamptz NOT NULL DEFAULT now(),
             PRIMARY KEY (name, version));
         CREATE TABLE IF NOT EXISTS {migrations} (
             name       text PRIMARY KEY,
             state      text NOT NULL,
             revision   bigint NOT NULL);
         CREATE TABLE IF NOT EXISTS {proxies} (
             id         text PRIMARY KEY,
             seen       timestamptz NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS {acks} (
             name       text NOT NULL,
             revision   bigint NOT NULL,
             proxy      text NOT NULL,
             detail     text NOT NULL,
             PRIMARY KEY (name, revision, proxy));
         ALTER TABLE {table} ADD COLUMN IF NOT EXISTS deleting bigint;
         COMMIT;",
        schema = pg.schema,
        table = table(pg),
        schemas = schema_table(pg),
        migrations = migrations_table(pg),
        proxies = proxies_table(pg),
        acks = acks_table(pg),
    );
    client.batch_execute(&sql).await.map_err(|e| unavailable("creating the registry table", e))
}

async fn pg_load(registry: &PgRegistry) -> Result<Snapshot, ProxyError> {
    let pg = &registry.config;
    let mut client = registry.client().await?;
    // One snapshot of every table: a promote changes a document and its
    // migration together, and a proxy must never see one without the other.
    let client = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(|e| unavailable("reading the registry", e))?;
    let rows = client
        .query(&format!("SELECT name, spec, deleting FROM {} ORDER BY name", table(pg)), &[])
        .await
        .map_err(|e| unavailable("reading namespaces", e))?;
    let docs = rows
        .into_iter()
        .map(|r| {
            let name: String = r.get(0);
            let deleting = r
                .get::<_, Option<i64>>(2)
                .map(|d| Deleting { name: name.clone(), revision: u64::try_from(d).unwrap_or(0) });
            Stored { source: format!("postgres:{}/{name}", table(pg)), yaml: r.get(1), deleting }
        })
        .collect();
    let rows = client
        .query(
            &format!(
                "SELECT DISTINCT ON (name) name, version, descriptor, pushed_by, \
                 to_char(pushed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
                 FROM {} ORDER BY name, version DESC",
                schema_table(pg)
            ),
            &[],
        )
        .await
        .map_err(|e| unavailable("reading schemas", e))?;
    let schemas = rows.iter().map(schema_row).collect();
    let rows = client
        .query(&format!("SELECT name, state FROM {} ORDER BY name", migrations_table(pg)), &[])
        .await
        .map_err(|e| unavailable("reading migrations", e))?;
    let mut migrations = Vec::new();
    let mut unreadable = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        match serde_json::from_str::<Migration>(row.get(1)) {
            Ok(m) => migrations.push(m),
            Err(e) => unreadable.push((format!("postgres:{}/{name}", migrations_table(pg)), e.to_string())),
        }
    }
    client.commit().await.map_err(|e| unavailable("reading the registry", e))?;
    Ok(Snapshot { docs, unreadable, schemas, migrations })
}

async fn pg_migration(registry: &PgRegistry, name: &str) -> Result<Option<Migration>, ProxyError> {
    let pg = &registry.config;
    let client = registry.client().await?;
    let row = client
        .query_opt(&format!("SELECT state FROM {} WHERE name = $1", migrations_table(pg)), &[&name])
        .await
        .map_err(|e| unavailable("reading a migration", e))?;
    row.map(|r| serde_json::from_str::<Migration>(r.get(0)))
        .transpose()
        .map_err(|e| unavailable(&format!("reading the migration of {name}"), e))
}

async fn pg_put_migration(
    registry: &PgRegistry,
    migration: &Migration,
    expected: u64,
    doc: Option<(&str, Option<&str>)>,
    notify: bool,
) -> Result<(), ProxyError> {
    let pg = &registry.config;
    let mut client = registry.client().await?;
    let failed = |e: tokio_postgres::Error| unavailable("writing a migration", e);
    let tx = client.transaction().await.map_err(failed)?;
    let name = migration.namespace.as_str();
    let stored = tx
        .query_opt(
            &format!("SELECT revision, state FROM {} WHERE name = $1 FOR UPDATE", migrations_table(pg)),
            &[&name],
        )
        .await
        .map_err(failed)?
        .map(|r| {
            let revision: i64 = r.get(0);
            let ended = serde_json::from_str::<Migration>(r.get(1)).is_ok_and(|m| m.phase.ended());
            (u64::try_from(revision).unwrap_or_default(), ended)
        });
    check_revision(name, stored, expected)?;
    let state = serde_json::to_string(migration).map_err(|e| ProxyError::Internal(e.to_string()))?;
    let revision = i64::try_from(migration.revision).unwrap_or(i64::MAX);
    // The primary key turns a race between two first revisions into an
    // error of the second.
    tx.execute(
        &format!(
            "INSERT INTO {t} (name, state, revision) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, revision = EXCLUDED.revision",
            t = migrations_table(pg)
        ),
        &[&name, &state, &revision],
    )
    .await
    .map_err(failed)?;
    if let Some((yaml, _)) = doc
        && tx.execute(&upsert_doc(pg), &[&name, &yaml]).await.map_err(failed)? == 0
    {
        return Err(being_deleted(name));
    }
    if notify || doc.is_some() {
        tx.execute("SELECT pg_notify($1, $2)", &[&channel(pg), &format!("migration:{name}")])
            .await
            .map_err(|e| unavailable("notifying proxies", e))?;
    }
    tx.commit().await.map_err(failed)
}

fn schema_row(r: &tokio_postgres::Row) -> SchemaVersion {
    let version: i32 = r.get(1);
    let descriptor: Vec<u8> = r.get(2);
    SchemaVersion {
        name: r.get(0),
        version: u32::try_from(version).unwrap_or_default(),
        descriptor: descriptor.into(),
        pushed_by: r.get(3),
        pushed_at: r.get(4),
    }
}

async fn pg_schema_versions(registry: &PgRegistry, name: &str) -> Result<Vec<SchemaVersion>, ProxyError> {
    let pg = &registry.config;
    let client = registry.client().await?;
    let rows = client
        .query(
            &format!(
                "SELECT name, version, descriptor, pushed_by, \
                 to_char(pushed_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
                 FROM {} WHERE name = $1 ORDER BY version",
                schema_table(pg)
            ),
            &[&name],
        )
        .await
        .map_err(|e| unavailable("reading schemas", e))?;
    Ok(rows.iter().map(schema_row).collect())
}

async fn pg_put_schema(registry: &PgRegistry, mut v: SchemaVersion) -> Result<SchemaVersion, ProxyError> {
    let pg = &registry.config;
    let mut client = registry.client().await?;
    let tx = client.transaction().await.map_err(|e| unavailable("writing a schema", e))?;
    let version = i32::try_from(v.version).map_err(|_| ProxyError::ResourceExhausted("too many versions".into()))?;
    // The primary key refuses a version another proxy stored meanwhile.
    let inserted = tx
        .execute(
            &format!(
                "INSERT INTO {} (name, version, descriptor, pushed_by) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                schema_table(pg)
            ),
            &[&v.name, &version, &v.descriptor.as_ref(), &v.pushed_by],
        )
        .await
        .map_err(|e| unavailable("writing a schema", e))?;
    if inserted == 0 {
        return Err(ProxyError::Conflict(format!(
            "schema {} version {} was pushed meanwhile; push again",
            v.name, v.version
        )));
    }
    tx.execute("SELECT pg_notify($1, $2)", &[&channel(pg), &format!("schema:{}", v.name)])
        .await
        .map_err(|e| unavailable("notifying proxies", e))?;
    tx.commit().await.map_err(|e| unavailable("writing a schema", e))?;
    v.pushed_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    Ok(v)
}

/// Stores a namespace document `($1 name, $2 yaml)`.
fn upsert_doc(pg: &PostgresRegistry) -> String {
    format!(
        "INSERT INTO {t} (name, spec) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET spec = EXCLUDED.spec, revision = {t}.revision + 1, updated_at = now()
         WHERE {t}.deleting IS NULL",
        t = table(pg)
    )
}

async fn pg_put(registry: &PgRegistry, name: &str, yaml: &str) -> Result<String, ProxyError> {
    let pg = &registry.config;
    let mut client = registry.client().await?;
    let tx = client.transaction().await.map_err(|e| unavailable("writing a namespace", e))?;
    let written =
        tx.execute(&upsert_doc(pg), &[&name, &yaml]).await.map_err(|e| unavailable("writing a namespace", e))?;
    if written == 0 {
        return Err(being_deleted(name));
    }
    // Delivered to every listening proxy when the transaction commits.
    tx.execute("SELECT pg_notify($1, $2)", &[&channel(pg), &name])
        .await
        .map_err(|e| unavailable("notifying proxies", e))?;
    tx.commit().await.map_err(|e| unavailable("writing a namespace", e))?;
    Ok(format!("postgres:{}/{name}", table(pg)))
}

/// Sets or clears the deletion mark of `name`, as a new revision every
/// proxy is told of; answers the mark's revision (`None`: no such row, or
/// cleared).
async fn pg_set_deleting(registry: &PgRegistry, name: &str, mark: bool) -> Result<Option<u64>, ProxyError> {
    let pg = &registry.config;
    let mut client = registry.client().await?;
    let failed = |e: tokio_postgres::Error| unavailable("marking a namespace deleted", e);
    let tx = client.transaction().await.map_err(failed)?;
    let row = tx
        .query_opt(
            &format!(
                "UPDATE {t} SET revision = revision + 1, deleting = CASE WHEN $2 THEN revision + 1 END, \
                 updated_at = now() WHERE name = $1 RETURNING deleting",
                t = table(pg)
            ),
            &[&name, &mark],
        )
        .await
        .map_err(failed)?;
    tx.execute("SELECT pg_notify($1, $2)", &[&channel(pg), &name])
        .await
        .map_err(|e| unavailable("notifying proxies", e))?;
    tx.commit().await.map_err(failed)?;
    Ok(row.and_then(|r| r.get::<_, Option<i64>>(0)).map(|d| u64::try_from(d).unwrap_or(0)))
}

async fn pg_delete(registry: &PgRegistry, name: &str) -> Result<(), ProxyError> {
    let pg = &registry.config;
    let mut client = registry.client().await?;
    let tx = client.transaction().await.map_err(|e| unavailable("deleting a namespace", e))?;
    tx.execute(&format!("DELETE FROM {} WHERE name = $1", table(pg)), &[&name])
        .await
        .map_err(|e| unavailable("deleting a namespace", e))?;
    tx.execute("SELECT pg_notify($1, $2)", &[&channel(pg), &name])
        .await
        .map_err(|e| unavailable("notifying proxies", e))?;
    tx.commit().await.map_err(|e| unavailable("deleting a namespace", e))
}

/// LISTENs for changes on a dedicated connection, reconnecting with
/// backoff; signals after every (re)connect, on every notification, and
/// every `resync_interval` in case a notification was lost.
async fn pg_watch(pg: PostgresRegistry, changed: mpsc::Sender<()>) {
    let mut resync = tokio::time::interval(pg.resync_interval);
    resync.tick().await;
    let mut delay = Duration::from_millis(200);
    loop {
        match pg_listen(&pg, &changed, &mut resync).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "registry listener lost; reconnecting"),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = changed.closed() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// One LISTEN session. `Ok` when the receiver went away, `Err` when the
/// connection failed.
async fn pg_listen(
    pg: &PostgresRegistry,
    changed: &mpsc::Sender<()>,
    resync: &mut tokio::time::Interval,
) -> Result<(), String> {
    let mut config: tokio_postgres::Config = pg.url.parse().map_err(|e| format!("registry url: {e}"))?;
    config.connect_timeout(Duration::from_secs(5)).application_name("prism-proxy registry listener");
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    // Polling the connection drives it and yields its notifications.
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notes_tx.send(n.payload().to_owned()).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "registry listener connection failed");
                    return;
                }
            }
        }
    });
    ensure_table(pg, &client).await.map_err(|e| e.to_string())?;
    client.batch_execute(&format!("LISTEN {}", channel(pg))).await.map_err(|e| e.to_string())?;
    tracing::info!(channel = %channel(pg), "listening for namespace changes");
    // Anything may have changed while we were not listening.
    if changed.send(()).await.is_err() {
        return Ok(());
    }
    let result = loop {
        tokio::select! {
            note = notes.recv() => match note {
                Some(name) => {
                    tracing::debug!(namespace = %name, "registry change notified");
                    if changed.send(()).await.is_err() {
                        break Ok(());
                    }
                }
                None => break Err("connection closed".to_owned()),
            },
            _ = resync.tick() => {
                if changed.send(()).await.is_err() {
                    break Ok(());
                }
            }
        }
    };
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::check_revision;

    #[test]
    fn a_stale_revision_is_refused() {
        assert!(check_revision("n", None, 0).is_ok());
        assert!(check_revision("n", None, 3).is_err());
        assert!(check_revision("n", Some((3, false)), 3).is_ok());
        assert!(check_revision("n", Some((4, false)), 3).is_err());
        // A new migration may replace an ended one, not a running one.
        assert!(check_revision("n", Some((9, true)), 0).is_ok());
        assert!(check_revision("n", Some((9, false)), 0).is_err());
    }
}
