//! The limits the kernel holds for a run as a whole: its processes and threads, and its
//! memory, by a control group of its own; and its share of the CPU, which is that of one
//! process of the server however many processes the run makes.
//!
//! A sampler that counts a run's processes slows down under the load it polices (a fork
//! bomb of 1,500 took 39 s to stop); a control group's `pids.max` makes the fork fail in
//! the kernel, and `memory.max` reclaims or kills at once, between any two samples. The
//! sampler then reads the group's events to end the run naming the limit it met.
//!
//! The server makes the groups under its own, in the cgroup v2 hierarchy when its
//! controllers are delegated to it (as systemd does for a service with `Delegate=yes`), or
//! else in the v1 `pids`, `memory` and `cpu` hierarchies when they are writable (a root
//! server in a container or VM with v1). Where neither works, it says so at start, and a
//! run is held only by per-process limits (`RLIMIT_NPROC`, counted in the run's user
//! namespace, and `RLIMIT_DATA`, each twice the run's limit) and the sampler.

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

/// The folder, under the server's own group of each hierarchy, that holds the runs' groups
/// of every server on the host, each server's in a folder named by its instance.
const RUNS: &str = "vm0-runs";

/// Where this server makes its runs' control groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hierarchy {
    /// One folder in the v2 hierarchy, with the pids, memory and cpu controllers.
    V2(PathBuf),
    /// A folder in each v1 hierarchy.
    V1 { pids: PathBuf, memory: PathBuf, cpu: Option<PathBuf> },
}

/// A run's control group, removed when dropped (once its processes are gone).
pub(crate) struct RunGroup {
    hierarchy: Hierarchy,
    name: String,
    /// `cgroup.procs` of each of the run's folders, open to write: a process that writes
    /// `0` there joins the group, which an unsandboxed run's first process does before it
    /// execs (a sandbox's helper opens them itself, see `procs_files`).
    procs: Vec<std::fs::File>,
}

impl Hierarchy {
    /// Finds where this process may make control groups with the pids and memory
    /// controllers, and makes its runs' folder there; why not, otherwise.
    pub(crate) fn find(instance: &str) -> Result<Hierarchy, CgroupError> {
        let read = |path: &str| std::fs::read_to_string(path).map_err(at(path));
        let (mounts, own) = (read("/proc/self/mounts")?, read("/proc/self/cgroup")?);
        let v2 = v2_folder(&mounts, &own).and_then(|folder| delegate_v2(&folder));
        let hierarchy = match v2 {
            Ok(runs) => Hierarchy::V2(runs.join(instance)),
            Err(v2) => v1_folders(&mounts, &own, instance)
                .map_err(|v1| CgroupError::Neither { v2: Box::new(v2), v1: Box::new(v1) })?,
        };
        hierarchy.remove_leftovers();
        // Probed with a group of the same shape as a run's.
        let probe = hierarchy.make(&format!("probe-{}", std::process::id()), 16, 64 << 20)?;
        drop(probe);
        Ok(hierarchy)
    }

    /// Says which hierarchy holds runs, for the log.
    pub(crate) fn describe(&self) -> String {
        match self {
            Hierarchy::V2(folder) => format!("cgroup v2 at {}", folder.display()),
            Hierarchy::V1 { pids, .. } => format!("cgroup v1 at {}", pids.display()),
        }
    }

    /// The run's folders of each hierarchy (the runs' folder itself for `""`).
    fn folders(&self, name: &str) -> Vec<PathBuf> {
        match self {
            Hierarchy::V2(runs) => vec![runs.join(name)],
            Hierarchy::V1 { pids, memory, cpu } => [Some(pids), Some(memory), cpu.as_ref()]
                .into_iter()
                .flatten()
                .map(|f| f.join(name))
                .collect(),
        }
    }

    /// Makes the group `name` for a run of at most `tasks` processes and threads and
    /// `memory` bytes.
    pub(crate) fn make(
        &self,
        name: &str,
        tasks: u64,
        memory: u64,
    ) -> Result<RunGroup, CgroupError> {
        let mut group =
            RunGroup { hierarchy: self.clone(), name: name.to_string(), procs: Vec::new() };
        for folder in self.folders(name) {
            // The server's folder too: another server's start may have found it empty and
            // removed it (see `remove_leftovers`), in which case the second try makes it.
            let made =
                std::fs::create_dir_all(&folder).or_else(|_| std::fs::create_dir_all(&folder));
            made.map_err(at(&folder))?;
        }
        let (pids, memory_folder) = match self {
            Hierarchy::V2(runs) => (runs.join(name), runs.join(name)),
            Hierarchy::V1 { pids, memory, .. } => (pids.join(name), memory.join(name)),
        };
        write(&pids.join("pids.max"), &tasks.to_string())?;
        match self {
            Hierarchy::V2(_) => {
                write(&memory_folder.join("memory.max"), &memory.to_string())?;
                // Swap would let a run hold more than its memory; not every kernel has it.
                let swap = memory_folder.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
            }
            Hierarchy::V1 { .. } => {
                write(&memory_folder.join("memory.limit_in_bytes"), &memory.to_string())?;
                let swap = memory_folder.join("memory.memsw.limit_in_bytes");
                if swap.exists() {
                    write(&swap, &memory.to_string())?;
                }
            }
        }
        for folder in self.folders(name) {
            let path = folder.join("cgroup.procs");
            let file = std::fs::OpenOptions::new().write(true).open(&path).map_err(at(&path))?;
            group.procs.push(file);
        }
        Ok(group)
    }

    /// Removes the groups that runs of an earlier process of this server left (it was
    /// killed: their processes died with it), and the empty folders of other servers
    /// that are gone. The kernel refuses to remove a group that has processes or groups
    /// in it, so no live run's group goes.
    fn remove_leftovers(&self) {
        for own in self.folders("") {
            for entry in std::fs::read_dir(&own).into_iter().flatten().flatten() {
                std::fs::remove_dir(entry.path()).ok();
            }
            let Some(all) = own.parent() else { continue };
            for entry in std::fs::read_dir(all).into_iter().flatten().flatten() {
                if entry.path() != own && entry.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir(entry.path()).ok();
                }
            }
        }
    }

    /// Removes this server's folders, when it stops.
    pub(crate) fn remove(&self) {
        self.remove_leftovers();
        for own in self.folders("") {
            std::fs::remove_dir(own).ok();
        }
    }
}

impl RunGroup {
    /// The descriptors that the run's first process writes `0` to, between fork and exec,
    /// to join the group (see [`join`]).
    pub(crate) fn procs(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// The run's `cgroup.procs` files, for the sandbox's helper to join the group by
    /// writing `0` to each (see [`join_files`]) before it makes the sandbox.
    pub(crate) fn procs_files(&self) -> Vec<PathBuf> {
        self.hierarchy.folders(&self.name).into_iter().map(|f| f.join("cgroup.procs")).collect()
    }

    /// Where the kernel counts what it refused the run.
    pub(crate) fn events(&self) -> Events {
        let name = &self.name;
        match &self.hierarchy {
            Hierarchy::V2(runs) => Events {
                pids: runs.join(name).join("pids.events"),
                memory: runs.join(name).join("memory.events"),
            },
            Hierarchy::V1 { pids, memory, .. } => Events {
                pids: pids.join(name).join("pids.events"),
                memory: memory.join(name).join("memory.oom_control"),
            },
        }
    }
}

/// The files where the kernel counts the times it held a run's group at its limits.
#[derive(Debug, Clone)]
pub(crate) struct Events {
    pids: PathBuf,
    memory: PathBuf,
}

impl Events {
    /// The limit the run's processes met, if any: the kernel refused them a process, or
    /// killed one for memory.
    pub(crate) fn breach(&self) -> Option<Breach> {
        let count = |path: &Path, key: &str| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            text.lines()
                .filter_map(|line| line.split_once(' '))
                .find(|(name, _)| *name == key)
                .and_then(|(_, n)| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        if count(&self.memory, "oom_kill") > 0 {
            Some(Breach::Memory)
        } else if count(&self.pids, "max") > 0 {
            Some(Breach::Processes)
        } else {
            None
        }
    }
}

impl Drop for RunGroup {
    fn drop(&mut self) {
        self.procs.clear();
        for folder in self.hierarchy.folders(&self.name) {
            // A killed run's last processes may take a moment to leave.
            for _ in 0..50 {
                match std::fs::remove_dir(&folder) {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                    _ => break,
                }
            }
        }
    }
}

/// Why the server cannot make its runs' control groups, or one of them.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CgroupError {
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: std::io::Error },
    /// What the host lacks.
    #[error("{0}")]
    Missing(String),
    #[error("cgroup v2: {v2}; cgroup v1: {v1}")]
    Neither { v2: Box<CgroupError>, v1: Box<CgroupError> },
}

/// The error of a step on the file or folder `path`.
fn at(path: impl AsRef<Path>) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.as_ref().to_path_buf();
    move |source| CgroupError::File { path, source }
}

/// A limit that the kernel held for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Breach {
    Processes,
    Memory,
}

/// Makes the calling process a member of the groups whose `cgroup.procs` are open as
/// `procs`. Between fork and exec: it only calls write(2).
pub(crate) fn join(procs: &[RawFd]) -> std::io::Result<()> {
    for &fd in procs {
        // SAFETY: write(2) from a static buffer to a descriptor we hold.
        if unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Makes the calling process join the groups whose `cgroup.procs` files are `files`.
pub(crate) fn join_files(files: &[PathBuf]) -> Result<(), CgroupError> {
    files.iter().try_for_each(|file| write(file, "0"))
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(at(path))
}

/// The server's own folder in the v2 hierarchy, from the mount table and the server's
/// `/proc/self/cgroup`.
fn v2_folder(mounts: &str, own: &str) -> Result<PathBuf, CgroupError> {
    let mount = mounts
        .lines()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .find(|fields| fields.len() > 2 && fields[2] == "cgroup2")
        .map(|fields| PathBuf::from(fields[1]))
        .ok_or(CgroupError::Missing("no cgroup2 file system is mounted".into()))?;
    let path = own
        .lines()
        .find_map(|line| line.strip_prefix("0::"))
        .ok_or(CgroupError::Missing("the server is in no v2 group".into()))?;
    Ok(mount.join(path.trim_start_matches('/')))
}

/// Makes the server's v2 folder able to hold its runs' groups, with the pids, memory and
/// cpu controllers, and answers their folder. A v2 group with processes of its own cannot
/// give controllers to its children, so the server first moves itself into a leaf of its
/// folder, as a delegated service does.
fn delegate_v2(folder: &Path) -> Result<PathBuf, CgroupError> {
    let available = std::fs::read_to_string(folder.join("cgroup.controllers")).unwrap_or_default();
    let wanted = ["pids", "memory", "cpu"];
    if let Some(missing) = wanted.iter().find(|c| !available.split_whitespace().any(|a| a == **c)) {
        let folder = folder.display();
        return Err(CgroupError::Missing(format!("{missing} is not delegated to {folder}")));
    }
    let enabled =
        std::fs::read_to_string(folder.join("cgroup.subtree_control")).unwrap_or_default();
    if !wanted.iter().all(|c| enabled.split_whitespace().any(|e| e == *c)) {
        let server = folder.join("vm0-server");
        std::fs::create_dir_all(&server).map_err(at(&server))?;
        write(&server.join("cgroup.procs"), &std::process::id().to_string())?;
        write(&folder.join("cgroup.subtree_control"), "+pids +memory +cpu")?;
    }
    Ok(folder.join(RUNS))
}

/// The server's folders in the v1 pids, memory and (if there) cpu hierarchies.
fn v1_folders(mounts: &str, own: &str, instance: &str) -> Result<Hierarchy, CgroupError> {
    let missing = |what: String| CgroupError::Missing(what);
    let folder = |controller: &str| -> Result<PathBuf, CgroupError> {
        let mount = mounts
            .lines()
            .map(|line| line.split(' ').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2] == "cgroup" && f[3].split(',').any(|o| o == controller))
            .map(|f| PathBuf::from(f[1]))
            .ok_or_else(|| missing(format!("no {controller} hierarchy is mounted")))?;
        let path = own
            .lines()
            .filter_map(|line| line.split_once(':')?.1.split_once(':'))
            .find(|(controllers, _)| controllers.split(',').any(|c| c == controller))
            .map(|(_, path)| path)
            .ok_or_else(|| missing(format!("the server is in no {controller} group")))?;
        Ok(mount.join(path.trim_start_matches('/')).join(RUNS).join(instance))
    };
    Ok(Hierarchy::V1 { pids: folder("pids")?, memory: folder("memory")?, cpu: folder("cpu").ok() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,relatime,pids 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
    const OWN: &str = "8:pids:/
4:memory:/process_api/f4ba
1:cpu:/
0::/user.slice/vm0.service
";

    #[test]
    fn finds_the_servers_own_folders() {
        assert_eq!(
            v2_folder(MOUNTS, OWN).unwrap(),
            Path::new("/sys/fs/cgroup/unified/user.slice/vm0.service")
        );
        assert_eq!(
            v1_folders(MOUNTS, OWN, "ins_1").unwrap(),
            Hierarchy::V1 {
                pids: "/sys/fs/cgroup/pids/vm0-runs/ins_1".into(),
                memory: "/sys/fs/cgroup/memory/process_api/f4ba/vm0-runs/ins_1".into(),
                cpu: Some("/sys/fs/cgroup/cpu/vm0-runs/ins_1".into()),
            }
        );
        assert!(v1_folders("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n", "0::/\n", "ins_1").is_err());
    }
}
