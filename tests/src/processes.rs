//! The host's processes, as a test sees them: runs in sandboxes have PIDs of their own,
//! so tests find a run's processes by a distinctive argument instead.

/// The PIDs of the processes that have `argument` among their arguments.
pub fn with_argument(argument: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            cmdline.split(|b| *b == 0).any(|a| a == argument.as_bytes()).then_some(pid)
        })
        .collect()
}

/// Waits, up to a second, until no process has any of `arguments` among its arguments:
/// the processes of a run that ended (the kernel kills them as the run's end is
/// recorded, so a moment may pass).
pub async fn until_gone(arguments: &[&str]) {
    for argument in arguments {
        crate::wait::wait_until(
            std::time::Duration::from_secs(1),
            &format!("the processes with argument {argument} ending with their run"),
            || async {
                let left = with_argument(argument);
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(left)
                }
            },
        )
        .await;
    }
}
