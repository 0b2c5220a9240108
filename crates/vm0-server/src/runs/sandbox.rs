//! The sandbox a run executes in, and the helper process that sets it up.
//!
//! The sandbox is made by hakoniwa (LGPL-3.0 with its linking exception, which lets this
//! Apache-2.0 program link it unchanged): new mount, PID, IPC, UTS and user namespaces, a
//! read-only system root, the run's working directory at `/work`, a private `/tmp` and
//! `/dev`, no network unless the agent asks for it, the run's user mapped to an
//! unprivileged one, and resource limits.
//!
//! Setting up namespaces forks, and the child of a fork of a program with many threads
//! (the server) may only call async-signal-safe functions until it execs. So the server
//! does not fork into a sandbox itself: it execs a helper, a program whose `main` calls
//! [`helper_main`] when its first argument is [`HELPER_ARG`] before it starts any thread.
//! `vm0-server` is one; a test harness has its own.
//!
//! A run dies whole: the helper dies with the server (`PR_SET_PDEATHSIG`), hakoniwa's
//! process with the helper, and the run's first process, PID 1 of its namespace, with
//! hakoniwa's; when PID 1 ends, the kernel kills every other process of the namespace,
//! those that called `setsid` or forked twice too.

use std::io::Write;
use std::path::{Path, PathBuf};

use hakoniwa::{Container, MountOptions, Namespace, Rlimit, Stdio};
use serde::{Deserialize, Serialize};

/// The first argument that makes a program the sandbox helper.
pub const HELPER_ARG: &str = "__sandbox";
/// The variable that carries the helper's `Spec` (the environment, not the arguments:
/// the run's secrets are in it, and a process's arguments are readable by every user).
const SPEC_VAR: &str = "VM0_SANDBOX_SPEC";
/// Where the run's working directory appears inside its sandbox.
pub(crate) const WORKDIR: &str = "/work";
/// The sandbox's writable memory file systems, as the run sees them.
pub(crate) const TMPFS: [&str; 2] = ["/tmp", "/dev/shm"];
/// The user and group a run has inside its sandbox: not root, so it holds no capability
/// there once it execs and cannot undo its read-only mounts.
const SANDBOX_ID: u32 = 1000;

/// What the helper runs, and how.
#[derive(Serialize, Deserialize)]
pub(crate) struct Spec {
    /// The run's working directory on the host.
    pub workdir: PathBuf,
    /// The program and its arguments; empty for a probe, which only sets a sandbox up.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub network: bool,
    pub limits: Limits,
    /// Where the helper writes how the sandbox went: `ok`, or `error: ` and why.
    pub status: PathBuf,
    /// The `cgroup.procs` files of the run's control group (`cgroup.rs`), which the helper
    /// joins first, so that every process of the sandbox is born in it. The helper, not
    /// the server between fork and exec: a spawn with no code to run in the child is a
    /// `posix_spawn`, which does not copy the server's page tables as a fork does (that
    /// copy took 10 ms of a one-line run's 25 ms to its first output).
    #[serde(default)]
    pub groups: Vec<PathBuf>,
}

/// A run's resource limits.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Resident memory of all the run's processes together.
    pub memory_bytes: u64,
    /// Processes and threads at once.
    pub tasks: u64,
    /// CPU time of all the run's processes together.
    pub cpu_seconds: u64,
    /// The size of any one file written.
    pub file_size_bytes: u64,
    /// The space the files of the working directory take together.
    pub disk_bytes: u64,
    /// The files and folders of the working directory.
    pub files: u64,
}

impl Limits {
    /// The kernel's limits on each process: twice the run's, so the run-wide check (at
    /// each sample) names the limit a run went past, while a burst between two samples
    /// still meets a wall. The file size has no run-wide check and is held exactly.
    fn per_process(&self) -> [(Rlimit, u64); 5] {
        [
            (Rlimit::Data, self.memory_bytes.saturating_mul(2)),
            (Rlimit::Nproc, self.tasks.saturating_mul(2)),
            (Rlimit::Cpu, self.cpu_seconds.saturating_mul(2)),
            (Rlimit::Fsize, self.file_size_bytes),
            (Rlimit::Core, 0),
        ]
    }
}

/// The helper's command for `spec`, for the server to spawn.
pub(crate) fn helper_command(helper: &Path, spec: &Spec) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(helper);
    command
        .arg(HELPER_ARG)
        .env_clear()
        .env(SPEC_VAR, serde_json::to_string(spec).expect("a spec serializes"))
        .env("VM0_SANDBOX_PARENT", std::process::id().to_string());
    command
}

/// How the helper's sandbox went, from its status file (which it then removes).
pub(crate) fn read_status(path: &Path) -> Result<(), SandboxError> {
    let status = std::fs::read_to_string(path);
    std::fs::remove_file(path).ok();
    match status {
        Ok(status) if status == "ok" => Ok(()),
        Ok(status) => Err(SandboxError::Reported(
            status.strip_prefix("error: ").unwrap_or(&status).to_string(),
        )),
        Err(_) => Err(SandboxError::Reported("the sandbox helper ended without a word".into())),
    }
}

/// Why a sandbox could not be made: in the helper, which reports it in its status file,
/// or when the server probes whether its host can make one.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SandboxError {
    /// A step of the set-up, named by `what`.
    #[error("{what}: {source}")]
    Step { what: String, source: std::io::Error },
    /// A step of hakoniwa's set-up, named by `what`.
    #[error("{what}: {source}")]
    Container { what: &'static str, source: hakoniwa::Error },
    /// A folder of the working directory could not be listed to give it to the sandbox
    /// user.
    #[error(transparent)]
    Listing(std::io::Error),
    /// hakoniwa could not start the sandbox's first process.
    #[error(transparent)]
    Start(hakoniwa::Error),
    /// What the helper reported in its status file.
    #[error("{0}")]
    Reported(String),
    /// The helper ended badly after it reported.
    #[error("the sandbox's set-up failed ({0})")]
    SetUp(std::process::ExitStatus),
    /// One of the above, with what the helper printed on its standard error.
    #[error("{reason} ({said})")]
    Said { reason: Box<SandboxError>, said: String },
    #[error("the sandbox helper did not answer within 20 s")]
    Silent,
    #[error("the working directory's path is not UTF-8")]
    NotUtf8,
}

/// The error of a set-up step named `what`.
fn step(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Step { what, source }
}

/// Checks that `helper` can make a sandbox on this host, by setting up an empty one.
pub(crate) async fn probe(helper: &Path, scratch: &Path) -> Result<(), SandboxError> {
    let spec = Spec {
        workdir: scratch.to_path_buf(),
        command: Vec::new(),
        env: Vec::new(),
        groups: Vec::new(),
        network: false,
        limits: Limits {
            memory_bytes: 64 << 20,
            tasks: 16,
            cpu_seconds: 10,
            file_size_bytes: 1 << 20,
            disk_bytes: 1 << 20,
            files: 16,
        },
        status: scratch.with_extension("status"),
    };
    std::fs::create_dir_all(scratch).map_err(step(format!("creating {}", scratch.display())))?;
    let mut command = helper_command(helper, &spec);
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let run = async {
        let output = command
            .output()
            .await
            .map_err(step(format!("starting the sandbox helper {}", helper.display())))?;
        // The helper says how hakoniwa went; what the sandbox's first process does before
        // it would exec the command (the read-only /dev, the closed user namespaces) shows
        // in the exit status.
        let answer = read_status(&spec.status).and_then(|()| {
            if output.status.success() {
                Ok(())
            } else {
                Err(SandboxError::SetUp(output.status))
            }
        });
        std::fs::remove_dir_all(scratch).ok();
        answer.map_err(|reason| match String::from_utf8_lossy(&output.stderr).trim() {
            "" => reason,
            said => SandboxError::Said { reason: Box::new(reason), said: said.to_string() },
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), run)
        .await
        .unwrap_or(Err(SandboxError::Silent))
}

/// The helper's `main`: sets up the sandbox of the spec in its environment, runs the
/// command in it, and ends as the command ended (with its exit code, or killed by its
/// signal). It must run before the program starts any thread.
pub fn helper_main() -> ! {
    let mut spec: Spec = match std::env::var(SPEC_VAR)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
    {
        Ok(spec) => spec,
        Err(error) => {
            eprintln!("vm0 sandbox: no spec in {SPEC_VAR}: {error}");
            std::process::exit(125);
        }
    };
    // Opened now: an unprivileged helper could not create it in the server's directory.
    let mut status_file = std::fs::File::create(&spec.status).ok();
    let mut report = |status: &str| {
        if let Some(file) = status_file.as_mut() {
            file.write_all(status.as_bytes()).ok();
        }
    };
    // As the server's user still, who may move processes into the run's group.
    if let Err(error) = super::cgroup::join_files(&spec.groups) {
        report(&format!("error: joining the run's control group: {error}"));
        std::process::exit(125);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        if let Err(error) = become_unprivileged(&mut spec) {
            report(&format!("error: leaving root: {error}"));
            std::process::exit(125);
        }
    }
    // After the change of user, which clears it.
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    // The server may have died before the line above, and then no signal comes.
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    if std::env::var("VM0_SANDBOX_PARENT").ok().and_then(|p| p.parse::<i32>().ok()) != Some(parent)
    {
        std::process::exit(1);
    }
    let status = match execute(&spec) {
        Ok(status) => status,
        Err(error) => {
            report(&format!("error: {error}"));
            std::process::exit(125);
        }
    };
    match (status.exit_code, status.code) {
        (Some(code), _) => {
            report("ok");
            std::process::exit(code);
        }
        // Killed by a signal: the helper ends the same way, for the server to see.
        (None, code) if code > 128 => {
            report("ok");
            // SAFETY: resetting a signal to its default action and raising it touch no
            // memory of ours.
            unsafe {
                libc::signal(code - 128, libc::SIG_DFL);
                libc::raise(code - 128);
            }
            std::process::exit(code);
        }
        (None, _) => {
            report(&format!("error: {}", status.reason));
            std::process::exit(125);
        }
    }
}

/// The host user a sandbox runs as when the server is root: a run mapped to root would be
/// root in every permission check on the files it can reach (the host's `/etc/shadow`,
/// `/proc/sys`, a set-user-ID file left in its directory).
const NOBODY: u32 = 65534;

/// Makes the helper `NOBODY`, with the run's working directory given to it and mounted
/// where that user can reach it (the server's data directory may be under a directory
/// only root may enter): in a mount namespace of the helper's own, a private `/tmp`.
fn become_unprivileged(spec: &mut Spec) -> Result<(), SandboxError> {
    use std::ffi::CString;
    fn check(what: &str, result: libc::c_int) -> Result<(), SandboxError> {
        if result == 0 {
            Ok(())
        } else {
            Err(step(what)(std::io::Error::last_os_error()))
        }
    }
    fn give(path: &Path) -> Result<(), SandboxError> {
        std::os::unix::fs::lchown(path, Some(NOBODY), Some(NOBODY))
            .map_err(step(format!("giving {} to the sandbox user", path.display())))?;
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            let entries = std::fs::read_dir(path).map_err(SandboxError::Listing)?;
            for entry in entries.flatten() {
                give(&entry.path())?;
            }
        }
        Ok(())
    }
    give(&spec.workdir)?;
    let c = |text: &str| CString::new(text).expect("no NUL in our own paths");
    let (root, tmp, tmpfs, mode, work) =
        (c("/"), c("/tmp"), c("tmpfs"), c("mode=1777"), c("/tmp/work"));
    // SAFETY: plain system calls on NUL-terminated strings that outlive them, in a helper
    // of one thread.
    unsafe {
        check("a mount namespace", libc::unshare(libc::CLONE_NEWNS))?;
        check(
            "private mounts",
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
        )?;
    }
    // Held open in the new namespace, and mounted through its descriptor: the private
    // /tmp may hide its path.
    let held = std::fs::File::open(&spec.workdir).map_err(step("opening the working directory"))?;
    let workdir = c(&format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&held)));
    // SAFETY: as above.
    unsafe {
        check(
            "a private /tmp",
            libc::mount(tmpfs.as_ptr(), tmp.as_ptr(), tmpfs.as_ptr(), 0, mode.as_ptr().cast()),
        )?;
        check("/tmp/work", libc::mkdir(work.as_ptr(), 0o755))?;
        check(
            "mounting the working directory",
            libc::mount(
                workdir.as_ptr(),
                work.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ),
        )?;
        check("dropping groups", libc::setgroups(0, std::ptr::null()))?;
        check("the sandbox group", libc::setgid(NOBODY))?;
        check("the sandbox user", libc::setuid(NOBODY))?;
        // The change of user made the helper undumpable, which closes its own
        // /proc/self/uid_map to it; the namespace's maps are written there.
        check("dumpable again", libc::prctl(libc::PR_SET_DUMPABLE, 1))?;
    }
    drop(held);
    spec.workdir = PathBuf::from("/tmp/work");
    Ok(())
}

/// Runs the spec's command in its sandbox, with the helper's standard streams.
fn execute(spec: &Spec) -> Result<hakoniwa::ExitStatus, SandboxError> {
    let workdir = spec.workdir.to_str().ok_or(SandboxError::NotUtf8)?;
    // A new mount, user and PID namespace, with a /proc of its own.
    let mut container = Container::new();
    container
        .rootfs("/")
        .map_err(|source| SandboxError::Container { what: "mounting the system root", source })?;
    container.unshare(Namespace::Ipc).unshare(Namespace::Uts).hostname("vm0");
    if !spec.network {
        container.unshare(Namespace::Network);
    }
    // Files in a tmpfs are memory that no process's resident size shows: the two writable
    // ones are held to half the run's memory limit each, so together they cannot pass it
    // between two samples, and the sampler adds what they hold to the run's memory
    // (`local.rs`). The rest of `/dev` is made read-only below.
    let tmpfs = format!("size={},mode=1777", spec.limits.memory_bytes / 2);
    for target in TMPFS {
        container.mount(
            "tmpfs",
            target,
            "tmpfs",
            MountOptions::NOSUID | MountOptions::NODEV,
            Some(tmpfs.clone()),
        );
    }
    container
        .devfsmount("/dev")
        .bindmount_rw(workdir, WORKDIR)
        .uidmap(SANDBOX_ID)
        .gidmap(SANDBOX_ID);
    for (limit, value) in spec.limits.per_process() {
        container.setrlimit(limit, value, value);
    }
    let program = spec.command.clone();
    // SAFETY: the helper has one thread, so its forked child may do what any program does.
    let mut command = unsafe {
        container.command_from_closure(move || {
            // Still with the capabilities of the sandbox's user namespace, which end at exec.
            // hakoniwa's /dev takes no mount flags, so it is remounted read-only here; a
            // bind remount replaces the mount's flags, so MS_NOSUID is given again.
            let dev = c"/dev";
            let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID;
            if libc::mount(
                std::ptr::null(),
                dev.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                eprintln!(
                    "vm0 sandbox: could not make /dev read-only: {}",
                    std::io::Error::last_os_error()
                );
                return 125;
            }
            // A user namespace of its own would let the run mount a tmpfs that no limit
            // counts, and undo nothing else: the run may make none.
            if let Err(error) = std::fs::write("/proc/sys/user/max_user_namespaces", "0") {
                eprintln!("vm0 sandbox: could not close user namespaces: {error}");
                return 125;
            }
            let Some((name, args)) = program.split_first() else { return 0 };
            // `exec` looks the program up in the sandbox's own PATH, which hakoniwa set.
            let error = std::os::unix::process::CommandExt::exec(
                std::process::Command::new(name).args(args),
            );
            eprintln!("could not start {name}: {error}");
            127
        })
    };
    command
        .current_dir(WORKDIR)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    command.status().map_err(SandboxError::Start)
}
