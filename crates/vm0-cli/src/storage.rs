//! `vm0 volumes` and `vm0 artifacts`: the same commands over the two kinds of storage,
//! which the API shapes alike.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use futures::TryStreamExt;
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use serde::Serialize;
use vm0_client::{types, Client, Paginate, Reply, Transfer};

use crate::lookup::{self, by_id_or_name};
use crate::output;

/// The commands of `vm0 volumes` and `vm0 artifacts`; their help says `KIND`, which
/// [`Kind::name_in_help`] replaces.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// Create an empty KIND.
    Create {
        /// The new KIND's name: lowercase letters, digits and hyphens.
        name: String,
    },
    /// List your KINDs.
    List {
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show a KIND and its current version.
    Get {
        /// The KIND's name or id.
        name: String,
    },
    /// List a KIND's versions.
    Versions {
        /// The KIND's name or id.
        name: String,
        /// Show at most this many.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Upload a directory's files as a KIND's new version.
    Push {
        /// The directory; every regular file under it is uploaded.
        dir: PathBuf,
        /// The KIND to push to [default: the directory's name].
        #[arg(long)]
        name: Option<String>,
        /// A description of the new version.
        #[arg(long, short)]
        message: Option<String>,
    },
    /// Download a KIND's files into a directory.
    ///
    /// Each file is checked against its size and SHA-256 before it takes its name.
    Pull {
        /// The KIND's name or id.
        name: String,
        /// The directory [default: ./NAME]; it must be empty or new unless --force.
        dir: Option<PathBuf>,
        /// The version's id [default: the current version].
        #[arg(long)]
        version: Option<String>,
        /// Pull into a directory that has files, overwriting those the version also has.
        #[arg(long)]
        force: bool,
    },
    /// Delete a KIND and all its versions.
    Delete {
        /// The KIND's name or id.
        name: String,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
    },
}

/// Which kind of storage a command is about.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Kind {
    Volume,
    Artifact,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Volume => "volume",
            Kind::Artifact => "artifact",
        }
    }

    /// The help of `command`, the volumes' or the artifacts', with `KIND` made this kind.
    pub(crate) fn name_in_help(self, command: clap::Command) -> clap::Command {
        let noun = self.noun();
        let with_article = if self == Kind::Artifact { "an artifact" } else { "a volume" };
        let fix = |text: Option<&clap::builder::StyledStr>| {
            text.map(|t| t.to_string().replace("a KIND", with_article).replace("KIND", noun))
        };
        command.mut_subcommands(|sub| {
            let (about, long_about) = (fix(sub.get_about()), fix(sub.get_long_about()));
            let sub = sub.mut_args(|arg| match fix(arg.get_help()) {
                Some(help) => arg.help(help),
                None => arg,
            });
            let sub = match about {
                Some(about) => sub.about(about),
                None => sub,
            };
            match long_about {
                Some(long_about) => sub.long_about(long_about),
                None => sub,
            }
        })
    }

    fn command(self) -> &'static str {
        match self {
            Kind::Volume => "volumes",
            Kind::Artifact => "artifacts",
        }
    }
}

/// A volume or an artifact: every field the API sends, typed, so that the commands treat
/// both alike and `--json` prints what the API sent.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    id: String,
    name: String,
    current_version_id: Option<String>,
    size: i64,
    file_count: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The current version, which a get has and a listing leaves out (`None`).
    #[serde(skip_serializing_if = "Option::is_none")]
    current_version: Option<Option<Version>>,
}

/// A version of a volume or an artifact, likewise.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Version {
    id: String,
    #[serde(flatten)]
    of: Of,
    size: i64,
    file_count: i64,
    message: Option<String>,
    created_by: String,
    created_at: DateTime<Utc>,
}

/// The volume or artifact a version belongs to, under the name the API gives its id.
#[derive(Serialize)]
enum Of {
    #[serde(rename = "volumeId")]
    Volume(String),
    #[serde(rename = "artifactId")]
    Artifact(String),
}

// Field by field, each type taken apart whole: a field the API adds, or one misspelt
// here, does not compile.

impl From<types::Volume> for Item {
    fn from(volume: types::Volume) -> Item {
        let types::Volume {
            id,
            name,
            current_version_id,
            size,
            file_count,
            created_at,
            updated_at,
        } = volume;
        Item {
            id,
            name: name.into(),
            current_version_id,
            size,
            file_count,
            created_at,
            updated_at,
            current_version: None,
        }
    }
}

impl From<types::Artifact> for Item {
    fn from(artifact: types::Artifact) -> Item {
        let types::Artifact {
            id,
            name,
            current_version_id,
            size,
            file_count,
            created_at,
            updated_at,
        } = artifact;
        Item {
            id,
            name: name.into(),
            current_version_id,
            size,
            file_count,
            created_at,
            updated_at,
            current_version: None,
        }
    }
}

impl From<types::VolumeDetail> for Item {
    fn from(detail: types::VolumeDetail) -> Item {
        let types::VolumeDetail {
            id,
            name,
            current_version_id,
            current_version,
            size,
            file_count,
            created_at,
            updated_at,
        } = detail;
        let current_version = Some(current_version.map(Version::from));
        Item {
            id,
            name: name.into(),
            current_version_id,
            size,
            file_count,
            created_at,
            updated_at,
            current_version,
        }
    }
}

impl From<types::ArtifactDetail> for Item {
    fn from(detail: types::ArtifactDetail) -> Item {
        let types::ArtifactDetail {
            id,
            name,
            current_version_id,
            current_version,
            size,
            file_count,
            created_at,
            updated_at,
        } = detail;
        let current_version = Some(current_version.map(Version::from));
        Item {
            id,
            name: name.into(),
            current_version_id,
            size,
            file_count,
            created_at,
            updated_at,
            current_version,
        }
    }
}

impl From<types::VolumeVersion> for Version {
    fn from(version: types::VolumeVersion) -> Version {
        let types::VolumeVersion {
            id,
            volume_id,
            size,
            file_count,
            message,
            created_by,
            created_at,
        } = version;
        Version { id, of: Of::Volume(volume_id), size, file_count, message, created_by, created_at }
    }
}

impl From<types::ArtifactVersion> for Version {
    fn from(
        types::ArtifactVersion {
            id,
            artifact_id,
            size,
            file_count,
            message,
            created_by,
            created_at,
        }: types::ArtifactVersion,
    ) -> Version {
        Version {
            id,
            of: Of::Artifact(artifact_id),
            size,
            file_count,
            message,
            created_by,
            created_at,
        }
    }
}

pub(crate) async fn run(kind: Kind, command: Command, client: &Client, json: bool) -> Result<()> {
    match command {
        Command::Create { name } => create(kind, client, &name, json).await,
        Command::List { limit } => list(kind, client, limit, json).await,
        Command::Get { name } => show(kind, client, &name, json).await,
        Command::Versions { name, limit } => versions(kind, client, &name, limit, json).await,
        Command::Push { dir, name, message } => push(kind, client, dir, name, message, json).await,
        Command::Pull { name, dir, version, force } => {
            pull(kind, client, &name, dir, version, force, json).await
        }
        Command::Delete { name, yes } => delete(kind, client, &name, yes, json).await,
    }
}

/// `create`: an empty volume or artifact.
async fn create(kind: Kind, client: &Client, name: &str, json: bool) -> Result<()> {
    let noun = kind.noun();
    let name: types::StorageName =
        crate::parse_arg(name).with_context(|| format!("the {noun} name"))?;
    let item: Item = match kind {
        Kind::Volume => client
            .create_volume()
            .body(types::CreateVolumeRequest { name })
            .send()
            .await
            .body()?
            .into(),
        Kind::Artifact => client
            .create_artifact()
            .body(types::CreateArtifactRequest { name })
            .send()
            .await
            .body()?
            .into(),
    };
    if json {
        return output::json(&item);
    }
    println!(
        "Created {noun} {} ({}). Push files to it: vm0 {} push DIR --name {}",
        item.name,
        item.id,
        kind.command(),
        item.name
    );
    Ok(())
}

/// `list`: a table of every volume or artifact, or the first `limit`.
async fn list(kind: Kind, client: &Client, limit: Option<usize>, json: bool) -> Result<()> {
    let items: Vec<Item> = match kind {
        Kind::Volume => {
            lookup::collect(client.list_volumes().stream().map_ok(Item::from), limit).await?
        }
        Kind::Artifact => {
            lookup::collect(client.list_artifacts().stream().map_ok(Item::from), limit).await?
        }
    };
    if json {
        return output::json(&items);
    }
    let rows = items
        .iter()
        .map(|i| {
            vec![
                i.name.clone(),
                i.id.clone(),
                HumanBytes(i.size as u64).to_string(),
                i.file_count.to_string(),
                output::time(&i.updated_at),
            ]
        })
        .collect();
    output::table(&["NAME", "ID", "SIZE", "FILES", "UPDATED"], rows);
    Ok(())
}

/// `get`: one volume or artifact and its current version.
async fn show(kind: Kind, client: &Client, name: &str, json: bool) -> Result<()> {
    let mut item = find(client, kind, name).await?;
    // Found by name, it came from the listing, which leaves out the current version.
    if item.current_version.is_none() {
        item = get(client, kind, &item.id).await?;
    }
    if json {
        return output::json(&item);
    }
    let current = item.current_version.take().flatten();
    let tokens = crate::tokens::names(client).await?;
    output::fields(&[
        ("Name", item.name.clone()),
        ("ID", item.id.clone()),
        ("Size", HumanBytes(item.size as u64).to_string()),
        ("Files", item.file_count.to_string()),
        ("Created", output::time(&item.created_at)),
        ("Updated", output::time(&item.updated_at)),
        (
            "Version",
            output::or_dash(current.as_ref().map(|v| {
                format!(
                    "{}, {} by {}",
                    lookup::short(&v.id),
                    output::time(&v.created_at),
                    by(&tokens, v)
                )
            })),
        ),
        ("Message", output::or_dash(current.and_then(|v| v.message))),
    ]);
    Ok(())
}

/// `versions`: a table of the versions of one volume or artifact.
async fn versions(
    kind: Kind,
    client: &Client,
    name: &str,
    limit: Option<usize>,
    json: bool,
) -> Result<()> {
    let item = find(client, kind, name).await?;
    let versions: Vec<Version> = match kind {
        Kind::Volume => {
            lookup::collect(
                client.list_volume_versions().id(&item.id).stream().map_ok(Version::from),
                limit,
            )
            .await?
        }
        Kind::Artifact => {
            lookup::collect(
                client.list_artifact_versions().id(&item.id).stream().map_ok(Version::from),
                limit,
            )
            .await?
        }
    };
    if json {
        return output::json(&versions);
    }
    let tokens = crate::tokens::names(client).await?;
    let ids = lookup::abbreviated(&versions.iter().map(|v| v.id.as_str()).collect::<Vec<_>>());
    let rows = versions
        .iter()
        .zip(ids)
        .map(|(v, id)| {
            let current = if item.current_version_id.as_deref() == Some(v.id.as_str()) {
                "current"
            } else {
                ""
            };
            vec![
                id,
                HumanBytes(v.size as u64).to_string(),
                v.file_count.to_string(),
                output::time(&v.created_at),
                by(&tokens, v),
                output::or_dash(v.message.clone()),
                current.into(),
            ]
        })
        .collect();
    output::table(&["ID", "SIZE", "FILES", "CREATED", "BY", "MESSAGE", ""], rows);
    Ok(())
}

/// `push`: a directory's files as a new version.
async fn push(
    kind: Kind,
    client: &Client,
    dir: PathBuf,
    name: Option<String>,
    message: Option<String>,
    json: bool,
) -> Result<()> {
    let noun = kind.noun();
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let name = match name {
        Some(name) => name,
        None => default_name(&dir).with_context(|| {
            format!("{} has no name to push it as: give one with --name", dir.display())
        })?,
    };
    let item = find(client, kind, &name).await.map_err(|e| {
        match e.downcast_ref::<lookup::NotFound>() {
            Some(_) => anyhow::anyhow!(
                "there is no {noun} {name:?}: create it first with `vm0 {} create {name}`",
                kind.command()
            ),
            None => e,
        }
    })?;
    let progress = Bar::start(&format!("pushing to {}", item.name));
    let options = progress.transfer();
    let version: Version = match kind {
        Kind::Volume => {
            client.push_volume(&item.id, &dir, message.as_deref(), &options).await?.into()
        }
        Kind::Artifact => {
            client.push_artifact(&item.id, &dir, message.as_deref(), &options).await?.into()
        }
    };
    progress.finish();
    if json {
        return output::json(&version);
    }
    println!(
        "Pushed {} ({}) to {noun} {} as version {}.",
        output::count(version.file_count as usize, "file"),
        HumanBytes(version.size as u64),
        item.name,
        lookup::short(&version.id)
    );
    Ok(())
}

/// `pull`: a version's files into a directory.
async fn pull(
    kind: Kind,
    client: &Client,
    name: &str,
    dir: Option<PathBuf>,
    version: Option<String>,
    force: bool,
    json: bool,
) -> Result<()> {
    let noun = kind.noun();
    let item = find(client, kind, name).await?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(&item.name));
    if !force && has_entries(&dir)? {
        bail!(
            "{} is not empty: pull into a new or empty directory, or pass --force to overwrite \
             the files the version has",
            dir.display()
        );
    }
    let version = match version {
        Some(key) => Some(version_of(client, kind, &item.id, &key).await?),
        None => None,
    };
    let progress = Bar::start(&format!("pulling {}", item.name));
    let options = progress.transfer();
    let download = match kind {
        Kind::Volume => client.pull_volume(&item.id, version.as_deref(), &dir, &options).await?,
        Kind::Artifact => {
            client.pull_artifact(&item.id, version.as_deref(), &dir, &options).await?
        }
    };
    progress.finish();
    let bytes: i64 = download.files.iter().map(|f| f.size).sum();
    if json {
        let files: Vec<_> = download
            .files
            .iter()
            .map(|f| serde_json::json!({ "path": f.path, "size": f.size, "hash": f.hash }))
            .collect();
        return output::json(
            &serde_json::json!({ "versionId": download.version_id, "dir": dir, "files": files }),
        );
    }
    println!(
        "Pulled {} ({}) of {noun} {} version {} into {}.",
        output::count(download.files.len(), "file"),
        HumanBytes(bytes as u64),
        item.name,
        lookup::short(&download.version_id),
        dir.display()
    );
    Ok(())
}

/// `delete`: a volume or artifact and all its versions, once confirmed.
async fn delete(kind: Kind, client: &Client, name: &str, yes: bool, json: bool) -> Result<()> {
    let noun = kind.noun();
    let item = find(client, kind, name).await?;
    if !yes
        && !output::confirm(&format!(
            "Delete {noun} {} ({}) and all its versions?",
            item.name, item.id
        ))?
    {
        bail!("not deleted");
    }
    match kind {
        Kind::Volume => client.delete_volume().id(&item.id).send().await.body()?,
        Kind::Artifact => client.delete_artifact().id(&item.id).send().await.body()?,
    };
    if json {
        return output::json(&serde_json::json!({ "id": item.id, "deleted": true }));
    }
    println!("Deleted {noun} {} ({}).", item.name, item.id);
    Ok(())
}

/// The token that made a version, by its name when the token is still listed.
fn by(tokens: &std::collections::HashMap<String, String>, version: &Version) -> String {
    tokens.get(&version.created_by).cloned().unwrap_or_else(|| version.created_by.clone())
}

/// The id of the version `key` names of the volume or artifact `id`: a whole id, or the
/// start of one (as tables show it), which is looked up among its versions.
async fn version_of(client: &Client, kind: Kind, id: &str, key: &str) -> Result<String> {
    if !lookup::is_short_hash(key) {
        return Ok(key.to_string());
    }
    let ids: Vec<String> = match kind {
        Kind::Volume => {
            lookup::collect(client.list_volume_versions().id(id).stream().map_ok(|v| v.id), None)
                .await?
        }
        Kind::Artifact => {
            lookup::collect(client.list_artifact_versions().id(id).stream().map_ok(|v| v.id), None)
                .await?
        }
    };
    lookup::expand("version", key, ids)
}

/// `version_of` for the volume or artifact named `name`, as `vm0 run --volume NAME:VERSION`
/// takes it.
pub(crate) async fn version_named(
    client: &Client,
    kind: Kind,
    name: &str,
    key: &str,
) -> Result<String> {
    if !lookup::is_short_hash(key) {
        return Ok(key.to_string());
    }
    let item = find(client, kind, name).await?;
    version_of(client, kind, &item.id, key).await
}

/// The volume or artifact `key` names, by id or name.
async fn find(client: &Client, kind: Kind, key: &str) -> Result<Item> {
    let by_id = get(client, kind, key);
    // Listing has no name filter: read pages until the name turns up.
    let by_name = async {
        match kind {
            Kind::Volume => {
                lookup::first(client.list_volumes().stream().map_ok(Item::from), |i: &Item| {
                    i.name == key
                })
                .await
            }
            Kind::Artifact => {
                lookup::first(client.list_artifacts().stream().map_ok(Item::from), |i: &Item| {
                    i.name == key
                })
                .await
            }
        }
    };
    by_id_or_name(kind.noun(), key, by_id, by_name).await
}

/// The volume or artifact with this id, with its current version.
async fn get(client: &Client, kind: Kind, id: &str) -> Result<Item, vm0_client::Error> {
    match kind {
        Kind::Volume => client.get_volume().id(id).send().await.body().map(Item::from),
        Kind::Artifact => client.get_artifact().id(id).send().await.body().map(Item::from),
    }
}

/// The storage name a directory is pushed as by default: its own name.
fn default_name(dir: &Path) -> Option<String> {
    let dir = std::fs::canonicalize(dir).ok()?;
    Some(dir.file_name()?.to_str()?.to_string())
}

/// Whether `dir` exists and has anything in it.
fn has_entries(dir: &Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// A transfer's progress bar on standard error when it is a terminal; nothing otherwise.
struct Bar(Option<ProgressBar>);

impl Bar {
    fn start(message: &str) -> Bar {
        if !std::io::stderr().is_terminal() {
            return Bar(None);
        }
        // A spinner while files are hashed and the transfer is prepared, a bar once bytes move.
        let bar = ProgressBar::new_spinner().with_message(message.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(100));
        Bar(Some(bar))
    }

    fn transfer(&self) -> Transfer {
        let Some(bar) = self.0.clone() else { return Transfer::default() };
        let style = ProgressStyle::with_template(
            "{msg} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        Transfer::default().on_progress(move |p| {
            if bar.length() != Some(p.total_bytes) {
                bar.set_style(style.clone());
                bar.set_length(p.total_bytes);
            }
            bar.set_position(p.bytes);
        })
    }

    fn finish(self) {
        if let Some(bar) = self.0 {
            bar.finish_and_clear();
        }
    }
}
