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

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

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
        bail!("{} has no database to back up", config.data_dir.display());
    }
    if config.blob_store != BlobLocation::Local {
        bail!("this server's blobs are in a bucket: back up the bucket itself (versioning, replication), and the database with it");
    }
    let key = secrets_key_here(config);
    let partial = sibling(to, "partial");
    let snapshot = sibling(to, "snapshot");
    let result = async {
        for attempt in 1..=ATTEMPTS {
            std::fs::remove_file(&snapshot).ok();
            let taken_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            snapshot_into(&database, &snapshot).await?;
            let hashes = listed_blobs(&snapshot).await?;
            let (root, snapshot, partial, key) = (config.data_dir.join("blobs"), snapshot.clone(), partial.clone(), key.clone());
            let written = tokio::task::spawn_blocking(move || write_archive(&partial, &snapshot, &root, &hashes, key.as_deref(), taken_at)).await??;
            match written {
                Ok(manifest) => return Ok(manifest),
                Err(BlobGone(hash)) => tracing::info!(%hash, attempt, "a blob of the snapshot was collected meanwhile; taking a new snapshot"),
            }
        }
        bail!("the blobs changed under {ATTEMPTS} snapshots in a row; try again when the server is less busy")
    }
    .await;
    std::fs::remove_file(&snapshot).ok();
    match result {
        Ok(manifest) => {
            std::fs::rename(&partial, to).with_context(|| format!("moving the backup to {}", to.display()))?;
            Ok(manifest)
        }
        Err(error) => {
            std::fs::remove_file(&partial).ok();
            Err(error)
        }
    }
}

/// Restores the backup `from` into the data directory of `config`, which must hold no
/// database yet and no running server.
pub async fn restore(config: &Config, from: &Path) -> anyhow::Result<Manifest> {
    let database = sqlite_file(config)?;
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating {}", config.data_dir.display()))?;
    let (_lock, _) = crate::hold_data_dir(&config.data_dir)?;
    if database.exists() {
        bail!("{} already has a database: restore into a new data directory, or move this one away first", config.data_dir.display());
    }
    let key_path = config.secrets_key.clone().unwrap_or_else(|| config.data_dir.join(SECRETS_KEY));
    let (from, root, data_dir) = (from.to_path_buf(), config.data_dir.join("blobs"), config.data_dir.clone());
    let manifest = tokio::task::spawn_blocking(move || unpack(&from, &data_dir, &root, &key_path)).await??;
    // The database's own check (after its migrations, should the backup be older than
    // this server), and that it lists no blob the archive lacked.
    let check = crate::store::SqlStore::open(&format!("sqlite://{}", database.display())).await?;
    let pool = check.sqlite().expect("a SQLite store");
    let verdict: String = sqlx::query_scalar("PRAGMA integrity_check").fetch_one(pool).await?;
    if verdict != "ok" {
        bail!("the restored database fails SQLite's integrity check: {verdict}");
    }
    for hash in listed_blobs(&database).await? {
        if !blobs::local_blob(&config.data_dir.join("blobs"), &hash).exists() {
            bail!("the restored database lists the blob {hash}, which the archive lacks");
        }
    }
    Ok(manifest)
}

/// The SQLite file of `config`; backups are for the embedded database only.
fn sqlite_file(config: &Config) -> anyhow::Result<PathBuf> {
    match &config.database_url {
        None => Ok(config.data_dir.join(DATABASE)),
        Some(url) => match url.strip_prefix("sqlite://") {
            Some(path) => Ok(PathBuf::from(path.split('?').next().unwrap_or(path))),
            None => bail!("backup and restore are for the embedded SQLite database; back up PostgreSQL with pg_dump, and the bucket with it"),
        },
    }
}

/// The secrets key, when it lives in the data directory (where no other copy is kept);
/// a key kept elsewhere, with `--secrets-key`, stays out of the archive.
fn secrets_key_here(config: &Config) -> Option<PathBuf> {
    let path = config.data_dir.join(SECRETS_KEY);
    (config.secrets_key.is_none() && path.exists()).then_some(path)
}

/// `path` with `.suffix` added, in the same folder (so a rename is atomic).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    path.with_file_name(name)
}

/// `VACUUM INTO`: a consistent copy of the live database, made in one read transaction
/// beside the server's own connections.
async fn snapshot_into(database: &Path, snapshot: &Path) -> anyhow::Result<()> {
    let mut connection = SqliteConnectOptions::new().filename(database).busy_timeout(std::time::Duration::from_secs(10)).connect().await?;
    let target = snapshot.to_str().context("the backup's path is not UTF-8")?;
    sqlx::query("VACUUM INTO ?").bind(target).execute(&mut connection).await.context("taking the database's snapshot")?;
    Ok(())
}

/// Every blob a database lists, by hash.
async fn listed_blobs(database: &Path) -> anyhow::Result<Vec<String>> {
    let mut connection = SqliteConnectOptions::new().filename(database).read_only(true).connect().await?;
    Ok(sqlx::query_scalar("SELECT hash FROM blobs ORDER BY hash").fetch_all(&mut connection).await?)
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
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Err(BlobGone(hash.clone()))),
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
            bail!("the blob {hash} in {} does not hold its hash's bytes: the blob store is damaged", path.display());
        }
        blobs += 1;
        blob_bytes += size;
    }
    if let Some(key) = key {
        archive.append_path_with_name(key, SECRETS_KEY).context("adding the secrets key")?;
    }
    let manifest = Manifest { server_version: env!("CARGO_PKG_VERSION").to_string(), taken_at, blobs, blob_bytes, secrets_key: key.is_some() };
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

/// Unpacks the archive `from` into `data_dir`: blobs (checked), the key (when there is
/// none yet; a different one is refused), then the database.
fn unpack(from: &Path, data_dir: &Path, root: &Path, key_path: &Path) -> anyhow::Result<Manifest> {
    let file = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let staged_database = data_dir.join(format!("{DATABASE}.restoring"));
    let mut manifest = None;
    let mut have_database = false;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry.path()?.to_string_lossy().into_owned();
        match name.as_str() {
            DATABASE => {
                copy_to(&mut entry, &staged_database)?;
                have_database = true;
            }
            MANIFEST => {
                let mut json = Vec::new();
                entry.by_ref().take(1 << 20).read_to_end(&mut json)?;
                manifest = Some(serde_json::from_slice::<Manifest>(&json).context("reading backup.json")?);
            }
            SECRETS_KEY => {
                let mut key = Vec::new();
                entry.by_ref().take(1 << 10).read_to_end(&mut key)?;
                match std::fs::read(key_path) {
                    Ok(existing) if existing != key => {
                        bail!("{} is another key than the backup's: the restored run secrets could not be read", key_path.display())
                    }
                    Ok(_) => {}
                    Err(_) => private_file(key_path)?.write_all(&key)?,
                }
            }
            _ => {
                let hash = name.strip_prefix("blobs/").and_then(|rest| rest.split_once('/')).map(|(_, hash)| hash.to_string());
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
                    bail!("the archive's blob {hash} does not hold its hash's bytes: the backup is damaged");
                }
                std::fs::rename(&temp, &path)?;
            }
        }
    }
    let manifest = manifest.context("the archive has no backup.json: is it a vm0-server backup?")?;
    if !have_database {
        bail!("the archive has no database");
    }
    std::fs::rename(&staged_database, data_dir.join(DATABASE))?;
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
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
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
