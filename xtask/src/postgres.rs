//! A throwaway PostgreSQL for the tests: a new cluster in `target/postgres/`, made with the
//! server binaries installed on the machine and stopped when dropped. Where this runs as
//! root, the cluster runs as the `postgres` user, since PostgreSQL refuses to run as root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::spec::workspace_root;

/// The variable naming a PostgreSQL server the tests may create databases on.
pub const TEST_DATABASE_URL: &str = "VM0_TEST_DATABASE_URL";

/// A running cluster.
pub struct Postgres {
    /// An administrator's URL: the tests create one database per server through it.
    pub url: String,
    bin: PathBuf,
    data: PathBuf,
    owner: Option<&'static str>,
}

impl Postgres {
    /// Starts a new cluster on a free port of 127.0.0.1, trusting local connections.
    pub fn start() -> Result<Postgres> {
        let bin = bin_dir()?;
        let root = workspace_root().join("target/postgres");
        if root.exists() {
            std::fs::remove_dir_all(&root)
                .with_context(|| format!("removing the last cluster in {}", root.display()))?;
        }
        std::fs::create_dir_all(root.join("socket"))?;
        let owner = running_as_root().then_some("postgres");
        if let Some(owner) = owner {
            run(Command::new("chown").args(["-R", owner]).arg(&root))?;
        }
        let data = root.join("data");
        run_as(
            owner,
            Command::new(bin.join("initdb"))
                .args([
                    "--username=postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-locale",
                    "-D",
                ])
                .arg(&data),
        )?;
        let port = free_port()?;
        // No fsync: the cluster lives for one test run, and its speed is the tests'.
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=400",
            root.join("socket").display()
        );
        let mut start = Command::new(bin.join("pg_ctl"));
        start
            .args(["--wait", "--silent", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(root.join("log"))
            .args(["-o", &options, "start"]);
        run_as(owner, &mut start)?;
        Ok(Postgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            data,
            owner,
        })
    }
}

/// Runs `command` as `owner` when given, else as this process's user.
fn run_as(owner: Option<&str>, command: &mut Command) -> Result<()> {
    match owner {
        Some(owner) => {
            let mut wrapped = Command::new("runuser");
            wrapped.args(["-u", owner, "--"]).arg(command.get_program()).args(command.get_args());
            run(&mut wrapped)
        }
        None => run(command),
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut stop = Command::new(self.bin.join("pg_ctl"));
        stop.args(["--silent", "-m", "immediate", "-D"]).arg(&self.data).arg("stop");
        if let Err(error) = run_as(self.owner, &mut stop) {
            eprintln!("stopping the test PostgreSQL: {error:#}");
        }
    }
}

/// The server binaries: `VM0_POSTGRES_BIN`, else the newest `/usr/lib/postgresql/*/bin`
/// (Debian's layout), else the folder of `pg_ctl` on the `PATH`.
fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("VM0_POSTGRES_BIN") {
        return Ok(dir.into());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|dir| dir.join("pg_ctl").exists() && dir.join("initdb").exists())
        .context(
            "no PostgreSQL server binaries (initdb, pg_ctl): install PostgreSQL, set \
             VM0_POSTGRES_BIN to their folder, or set VM0_TEST_DATABASE_URL to a server the \
             tests may create databases on",
        )
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("starting {}", Path::new(command.get_program()).display()))?;
    if !output.status.success() {
        bail!(
            "{:?} failed: {}{}",
            command,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}
