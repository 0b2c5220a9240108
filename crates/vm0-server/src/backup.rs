//! `vm0-server backup` and `vm0-server restore`: a consistent copy of an embedded
//! server's data, taken while it runs, as one tar file.
//!
//! The archive holds `vm0.db`, a snapshot of the SQLite database made by `VACUUM INTO`
//! (one read transaction, so it is consistent however busy the server is), every blob
//! the snapshot lists under `blobs/`, each checked against its SHA-256 as it is copied,
//! the secrets key when it lives in the data directory, and `backup.json`, which says
//! what is in it. A blob the collector removes between the snapshot and its copy (it was
//! no longer used) makes the backup take a new snapshot and go on, so that every blob of
//! the archive's database is in the archive.
//!
//! Restore unpacks into a data directory without a database, checks every blob again
//! and places the database last, so an interrupted restore leaves no half-restored
//! server behind.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::ConnectOptions;

use crate::{blobs, BlobLocation, Config};

/// What a backup holds, as `backup.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The server version that made the archive.
    pub server_version: String,
    /// When the database's snapshot was taken (RFC 3339).
    pub taken_at: String,
    /// How many blobs, and their bytes, the archive holds.
    pub blobs: u64,
    pub blob_bytes: u64,
    /// Whether the archive holds the key that seals run secrets.
    pub secrets_key: bool,
}

const MANIFEST: &str = "backup.json";
const DATABASE: &str = "vm0.db";
const SECRETS_KEY: &str = "secrets.key";
/// Snapshots taken at most, when the collector keeps removing blobs of the last one.
const ATTEMPTS: usize = 5;

/// Why a backup attempt must start over with a new snapshot.
struct BlobGone(String);

/// Writes a backup of the server on `config` to `to`, while it may be serving. The file
/// appears whole or not at all, readable by its owner only: it holds the signing key of
/// cursors and URLs, and the secrets key when it is in the data directory.
pub async fn backup(config: &Config, to: &Path) -> anyhow::Result<Manifest> {
    let database = sqlite_file(config)?;
    if !database.exists() {
        bail!("{} has no database to back up", database.display());
    }
    if config.blob_store != BlobLocation::Local {
        bail!(
            "this server's blobs are in a bucket: back up the bucket itself \
             (versioning, replication), and the database with it"
        );
    }
    let root = config.data_dir.join("blobs");
    let target = absolute(to)?;
    if target == absolute(&database)? || target.starts_with(absolute(&root)?) {
        bail!("{} is the server's own data: write the backup somewhere else", to.display());
    }
    let key = secrets_key_here(config);
    // Names of this process's own, so that two backups to one file do not meet.
    let partial = sibling(to, &format!("partial-{}", std::process::id()));
    let snapshot = sibling(to, &format!("snapshot-{}", std::process::id()));
    let result = async {
        for attempt in 1..=ATTEMPTS {
            let taken_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            snapshot_into(&database, &snapshot).await?;
            let hashes = listed_blobs(&snapshot).await?;
            let (root, snapshot) = (root.clone(), snapshot.clone());
            let (partial, key) = (partial.clone(), key.clone());
            let written = tokio::task::spawn_blocking(move || {
                write_archive(&partial, &snapshot, &root, &hashes, key.as_deref(), taken_at)
            })
            .await??;
            match written {
                Ok(manifest) => return Ok(manifest),
                Err(BlobGone(hash)) => tracing::info!(
                    %hash,
                    attempt,
                    "a blob of the snapshot was collected meanwhile; taking a new snapshot"
                ),
            }
        }
        bail!(
            "the blobs changed under {ATTEMPTS} snapshots in a row; \
             try again when the server is less busy"
        )
    }
    .await;
    std::fs::remove_file(&snapshot).ok();
    match result {
        Ok(manifest) => {
            std::fs::rename(&partial, to)
                .with_context(|| format!("moving the backup to {}", to.display()))?;
            sync_folder(to)?;
            Ok(manifest)
        }
        Err(error) => {
            std::fs::remove_file(&partial).ok();
            Err(error)
        }
    }
}

/// Restores the backup `from` into the database and data directory of `config`, which
/// must hold no database yet and no running server. The database is checked (SQLite's
/// integrity check, after the migrations of this version) while it is staged beside its
/// place, and takes its place last with the key; a failed restore leaves neither. The
/// blobs it placed stay: each is checked, and the collector removes unused ones.
pub async fn restore(config: &Config, from: &Path) -> anyhow::Result<Manifest> {
    let database = sqlite_file(config)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let (_lock, _) = crate::hold_data_dir(&config.data_dir)?;
    for file in [database.clone(), sibling(&database, "wal"), sibling(&database, "shm")] {
        if file.exists() {
            bail!(
                "{} exists: restore into a new data directory, \
                 or move the old database and its -wal and -shm files away first",
                file.display()
            );
        }
    }
    let staged = sibling(&database, "restoring");
    let key_path = config.secrets_key_path();
    let staged_key = sibling(&key_path, "restoring");
    let result = async {
        let (archive, root) = (from.to_path_buf(), config.data_dir.join("blobs"));
        let paths = (staged.clone(), key_path.clone(), staged_key.clone());
        let manifest = tokio::task::spawn_blocking(move || {
            unpack(&archive, &paths.0, &root, &paths.1, &paths.2)
        })
        .await??;
        check_restored(&staged, &config.data_dir.join("blobs")).await?;
        if staged_key.exists() {
            std::fs::rename(&staged_key, &key_path)?;
        }
        std::fs::rename(&staged, &database)?;
        sync_folder(&database)?;
        Ok(manifest)
    }
    .await;
    if result.is_err() {
        for file in [staged.clone(), sibling(&staged, "wal"), sibling(&staged, "shm"), staged_key] {
            std::fs::remove_file(file).ok();
        }
    }
    result
}

/// The staged database's checks: SQLite's own, after this version's migrations (an older
/// backup is brought up to date), and that it lists no blob the archive lacked.
async fn check_restored(staged: &Path, root: &Path) -> anyhow::Result<()> {
    let url = format!("sqlite://{}", staged.display());
    let store =
        crate::store::SqlStore::open(&url).await.context("migrating the restored database")?;
    let pool = store.sqlite().expect("a SQLite store").clone();
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(&pool).await?;
    pool.close().await;
    if verdict != "ok" {
        bail!("the restored database fails SQLite's integrity check: {verdict}");
    }
    for hash in listed_blobs(staged).await? {
        if !blobs::local_blob(root, &hash).exists() {
            bail!("the restored database lists the blob {hash}, which the archive lacks");
        }
    }
    Ok(())
}

/// The SQLite file of `config`; backups are for the embedded database only.
fn sqlite_file(config: &Config) -> anyhow::Result<PathBuf> {
    let url = config.database_url();
    if !url.starts_with("sqlite:") {
        bail!(
            "backup and restore are for the embedded SQLite database; \
             back up PostgreSQL with pg_dump, and the bucket with it"
        );
    }
    Ok(SqliteConnectOptions::from_str(&url)?.get_filename().to_path_buf())
}

/// `path` made absolute, through whatever links its folder has.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let folder =
        std::fs::canonicalize(folder).with_context(|| format!("finding {}", folder.display()))?;
    Ok(folder.join(path.file_name().unwrap_or_default()))
}

/// Syncs the folder that holds `path`, so that a rename into it is durable.
fn sync_folder(path: &Path) -> anyhow::Result<()> {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(folder)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", folder.display()))
}

/// The secrets key, when it lives in the data directory (where no other copy is kept);
/// a key kept elsewhere, with `--secrets-key`, stays out of the archive.
fn secrets_key_here(config: &Config) -> Option<PathBuf> {
    let path = config.secrets_key_path();
    (config.secrets_key.is_none() && path.exists()).then_some(path)
}

/// `path` with `-suffix` added, in the same folder (so a rename is atomic), as SQLite
/// names `vm0.db-wal`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!("-{suffix}"));
    path.with_file_name(name)
}

/// `VACUUM INTO`: a consistent copy of the live database, made in one read transaction
/// beside the server's own connections.
async fn snapshot_into(database: &Path, snapshot: &Path) -> anyhow::Result<()> {
    // Made empty first, readable by its owner only, as `VACUUM INTO` takes an empty file.
    drop(private_file(snapshot)?);
    let options = SqliteConnectOptions::new()
        .filename(database)
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(10));
    let mut connection = options.connect().await?;
    let target = snapshot.to_str().context("the backup's path is not UTF-8")?;
    sqlx::query("VACUUM INTO ?")
        .bind(target)
        .execute(&mut connection)
        .await
        .context("taking the database's snapshot")?;
    Ok(())
}

/// Every blob a database lists, by hash.
async fn listed_blobs(database: &Path) -> anyhow::Result<Vec<String>> {
    let mut connection =
        SqliteConnectOptions::new().filename(database).read_only(true).connect().await?;
    let hashes: Vec<String> = sqlx::query_scalar("SELECT hash FROM blobs ORDER BY hash")
        .fetch_all(&mut connection)
        .await?;
    // Each names a file: a database that lists anything else is refused, not followed.
    if let Some(bad) = hashes.iter().find(|hash| !blobs::is_hash(hash)) {
        anyhow::bail!("the database lists a blob {bad:?}, which is not a SHA-256 in hex");
    }
    Ok(hashes)
}

/// Writes the archive to `partial`: the snapshot, the blobs (each checked as it is
/// copied), the key, and the manifest last. `BlobGone` when a blob is missing.
fn write_archive(
    partial: &Path,
    snapshot: &Path,
    root: &Path,
    hashes: &[String],
    key: Option<&Path>,
    taken_at: String,
) -> anyhow::Result<Result<Manifest, BlobGone>> {
    let file = private_file(partial)?;
    let mut archive = tar::Builder::new(std::io::BufWriter::new(file));
    archive.append_path_with_name(snapshot, DATABASE).context("adding the database")?;
    let (mut blobs, mut blob_bytes) = (0u64, 0u64);
    for hash in hashes {
        let path = blobs::local_blob(root, hash);
        let file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err(BlobGone(hash.clone())))
            }
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        let size = file.metadata()?.len();
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        let mut reader = Hashing::new(file.take(size));
        archive.append_data(&mut header, format!("blobs/{}/{hash}", &hash[..2]), &mut reader)?;
        if reader.hex() != *hash {
            bail!(
                "the blob {hash} in {} does not hold its hash's bytes: the blob store is damaged",
                path.display()
            );
        }
        blobs += 1;
        blob_bytes += size;
    }
    if let Some(key) = key {
        archive.append_path_with_name(key, SECRETS_KEY).context("adding the secrets key")?;
    }
    let manifest = Manifest {
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        taken_at,
        blobs,
        blob_bytes,
        secrets_key: key.is_some(),
    };
    let json = serde_json::to_vec_pretty(&manifest)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(json.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    archive.append_data(&mut header, MANIFEST, json.as_slice())?;
    let file = archive.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(Ok(manifest))
}

/// Unpacks the archive `from`: blobs into `root` (each checked as it is written), the
/// database to `staged`, and the key to `staged_key` when `key_path` has none yet (a
/// different one is refused). The manifest, checked against what the archive held.
fn unpack(
    from: &Path,
    staged: &Path,
    root: &Path,
    key_path: &Path,
    staged_key: &Path,
) -> anyhow::Result<Manifest> {
    let file = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let (mut manifest, mut database, mut blobs, mut blob_bytes) = (None, false, 0u64, 0u64);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            bail!("the archive's {name} is not a regular file: is it a vm0-server backup?");
        }
        match name.as_str() {
            DATABASE => {
                if entry.size() == 0 {
                    bail!("the archive's database is empty");
                }
                copy_to(&mut entry, staged)?;
                database = true;
            }
            MANIFEST => {
                let mut json = Vec::new();
                entry.by_ref().take(1 << 20).read_to_end(&mut json)?;
                manifest =
                    Some(serde_json::from_slice::<Manifest>(&json).context("reading backup.json")?);
            }
            SECRETS_KEY => {
                let mut key = Vec::new();
                entry.by_ref().take(33).read_to_end(&mut key)?;
                if key.len() != 32 {
                    bail!("the archive's secrets key is not 32 bytes");
                }
                match std::fs::read(key_path) {
                    Ok(existing) if existing != key => {
                        bail!(
                            "{} is another key than the backup's: \
                             the restored run secrets could not be read",
                            key_path.display()
                        )
                    }
                    Ok(_) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                        copy_to(&mut key.as_slice(), staged_key)?
                    }
                    Err(error) => {
                        return Err(error)
                            .with_context(|| format!("reading {}", key_path.display()))
                    }
                }
            }
            _ => {
                let hash = name
                    .strip_prefix("blobs/")
                    .and_then(|rest| rest.split_once('/'))
                    .map(|(_, hash)| hash.to_string());
                let Some(hash) = hash.filter(|hash| blobs::is_hash(hash)) else {
                    bail!("the archive holds {name}, which no backup has: is it one?");
                };
                let path = blobs::local_blob(root, &hash);
                std::fs::create_dir_all(path.parent().expect("blob paths have a folder"))?;
                let temp = sibling(&path, "restoring");
                let mut reader = Hashing::new(&mut entry);
                copy_to(&mut reader, &temp)?;
                if reader.hex() != hash {
                    std::fs::remove_file(&temp).ok();
                    bail!(
                        "the archive's blob {hash} does not hold its hash's bytes: \
                         the backup is damaged"
                    );
                }
                std::fs::rename(&temp, &path)?;
                sync_folder(&path)?;
                blobs += 1;
                blob_bytes += entry.size();
            }
        }
    }
    let manifest =
        manifest.context("the archive has no backup.json: is it a vm0-server backup?")?;
    if !database {
        bail!("the archive has no database");
    }
    if (manifest.blobs, manifest.blob_bytes) != (blobs, blob_bytes) {
        bail!(
            "the archive holds {blobs} blobs ({blob_bytes} bytes), \
             and its backup.json says {} ({}): it is incomplete",
            manifest.blobs,
            manifest.blob_bytes
        );
    }
    Ok(manifest)
}

/// Writes all of `reader` to a new file at `path`, synced.
fn copy_to(reader: &mut impl Read, path: &Path) -> anyhow::Result<()> {
    let mut file = private_file(path)?;
    std::io::copy(reader, &mut file).with_context(|| format!("writing {}", path.display()))?;
    file.sync_all()?;
    Ok(())
}

/// A new file that only its owner may read.
fn private_file(path: &Path) -> anyhow::Result<std::fs::File> {
    // A file left by an interrupted backup or restore is made anew, with this mode.
    std::fs::remove_file(path).ok();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path).with_context(|| format!("creating {}", path.display()))
}

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> Self {
        Hashing { inner, hasher: Sha256::new() }
    }

    fn hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
