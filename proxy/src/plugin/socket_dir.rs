//! The private directory of a proxy's plugin sockets.
//!
//! Each proxy makes `prism-<pid>-<random>` in the temp directory, readable
//! by its own user only (a socket there is a plugin's whole API), and
//! removes it when it stops. A proxy killed with SIGKILL cannot; the next
//! proxy started by the same user removes the directories whose proxy is no
//! longer running.

use std::io;
use std::path::Path;

use tempfile::TempDir;

const PREFIX: &str = "prism-";

/// Creates this proxy's socket directory (mode 0700), after removing the
/// ones left by proxies of the same user that are gone.
pub fn create() -> io::Result<TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir()?;
    sweep(dir.path());
    Ok(dir)
}

/// Removes the socket directories next to `ours` that belong to the same
/// user and whose proxy process has exited.
fn sweep(ours: &Path) {
    use std::os::unix::fs::MetadataExt;
    let (Some(parent), Ok(mine)) = (ours.parent(), std::fs::metadata(ours)) else { return };
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(pid) = owner_pid(&entry.file_name().to_string_lossy()) else { continue };
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        if path == ours || !meta.is_dir() || meta.uid() != mine.uid() || alive(pid) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {
                tracing::info!(dir = %path.display(), pid, "removed the socket directory of a proxy that is gone")
            }
            Err(e) => tracing::debug!(dir = %path.display(), error = %e, "cannot remove a stale socket directory"),
        }
    }
}

/// The proxy pid in a socket directory's name (`prism-<pid>-<random>`).
fn owner_pid(name: &str) -> Option<i32> {
    let (pid, random) = name.strip_prefix(PREFIX)?.split_once('-')?;
    (!random.is_empty()).then_some(())?;
    pid.parse().ok().filter(|p| *p > 0)
}

/// Whether process `pid` exists (signal 0 checks without sending one). A
/// process of another user counts as alive: its directory is not ours.
fn alive(pid: i32) -> bool {
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names() {
        assert_eq!(owner_pid("prism-1234-abcDEF"), Some(1234));
        for other in ["prism-abc", "prism-1234", "prism-1234-", "prism--1-x", "prism-0-x", "other-1-x", "prism-x-y"] {
            assert_eq!(owner_pid(other), None, "{other}");
        }
    }

    #[test]
    fn own_dir_is_private_and_dead_proxies_dirs_are_swept() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let ours = tempfile::Builder::new().prefix("prism-1-").tempdir_in(root.path()).unwrap();
        // pid 1 is alive; a pid beyond pid_max never is.
        let dead = root.path().join("prism-2147483646-x");
        std::fs::create_dir(&dead).unwrap();
        std::fs::write(dead.join("memstore-1.sock"), b"").unwrap();
        let live = root.path().join(format!("prism-{}-y", std::process::id()));
        std::fs::create_dir(&live).unwrap();
        let unrelated = root.path().join("prism-notes");
        std::fs::create_dir(&unrelated).unwrap();
        sweep(ours.path());
        assert!(!dead.exists());
        assert!(live.exists() && unrelated.exists() && ours.path().exists());

        let dir = create().unwrap();
        assert_eq!(std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
