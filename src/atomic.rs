//! Writing files and folders so that a crash, a full disk or a second process leaves either the
//! old version or the new one, never half of either: everything is written beside its
//! destination under a temporary name and renamed into place (a rename within one file system
//! is atomic). Reports, model folders, checkpoints, cache entries and exports all write here.
//!
//! Files get the usual permissions (0644 under the usual umask): model weights are read by
//! other users of a shared machine.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use candle_core::Tensor;

/// A name beside `path` that no other writer (thread or process) uses: hidden, so folder walks
/// and cache listings skip it.
fn temporary_beside(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}-{n}.tmp", std::process::id()))
}

/// Checks, before any work, that a file can later be written at `path`: its folder exists and
/// takes a new file (one is created beside `path` and removed), and `path` is not a folder.
/// A long run then cannot end by failing to save what it computed.
pub fn check_writable(path: &Path, what: &str) -> Result<()> {
    if path.is_dir() {
        bail!("{what} {}: is a folder, not a file", path.display());
    }
    let parent = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p,
        None => Path::new("."),
    };
    if !parent.is_dir() {
        bail!(
            "{what} {}: the folder {} does not exist (create it first)",
            path.display(),
            parent.display()
        );
    }
    let probe = temporary_beside(path);
    std::fs::write(&probe, b"").with_context(|| {
        format!(
            "{what} {}: cannot write in {}",
            path.display(),
            parent.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary_beside(path);
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("{}: cannot write", path.display()));
    }
    rename_into_place(&tmp, path)
}

/// Copies `from` to `to` atomically.
pub fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).with_context(|| format!("{}: cannot read", from.display()))?;
    write_file(to, &bytes)
}

/// Saves `tensors` as a safetensors file at `path` atomically.
pub fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    let tmp = temporary_beside(path);
    if let Err(e) = candle_core::safetensors::save(tensors, &tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("{}: cannot write", path.display()));
    }
    rename_into_place(&tmp, path)
}

fn rename_into_place(tmp: &Path, path: &Path) -> Result<()> {
    set_readable(tmp);
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        anyhow::Error::new(e).context(format!("{}: cannot write", path.display()))
    })
}

/// rw-r--r-- (less what the umask takes away): some writers create files 0600.
#[cfg(unix)]
fn set_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mask = umask();
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644 & !mask));
}

#[cfg(not(unix))]
fn set_readable(_: &Path) {}

/// The process's umask, read once from `/proc/self/status` (Linux); 0o022 where unknown.
#[cfg(unix)]
fn umask() -> u32 {
    static UMASK: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}

/// A folder being written: files go into a temporary sibling, and [`NewDir::commit`] renames it
/// into place. Dropped without a commit, the temporary folder is removed.
pub struct NewDir {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl NewDir {
    /// Starts a new folder at `dest`, which must not exist yet.
    pub fn create(dest: &Path) -> Result<Self> {
        if dest.exists() {
            bail!("{}: already exists; choose a new folder", dest.display());
        }
        Self::replacing(dest)
    }

    /// Starts a folder that will replace `dest` if it exists (see [`NewDir::replace`]).
    pub fn replacing(dest: &Path) -> Result<Self> {
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot create", parent.display()))?;
        }
        let tmp = temporary_beside(dest);
        std::fs::create_dir_all(&tmp)
            .with_context(|| format!("{}: cannot create", tmp.display()))?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            done: false,
        })
    }

    /// Where to write the folder's files for now.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Writes one file of the folder.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.tmp.join(name);
        std::fs::write(&path, bytes)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        set_readable(&path);
        Ok(())
    }

    /// Saves tensors as one file of the folder.
    pub fn write_safetensors(&self, name: &str, tensors: &HashMap<String, Tensor>) -> Result<()> {
        let path = self.tmp.join(name);
        candle_core::safetensors::save(tensors, &path)
            .with_context(|| format!("{}: cannot write", path.display()))?;
        set_readable(&path);
        Ok(())
    }

    /// Copies `from` into the folder as `name`.
    pub fn copy(&self, from: &Path, name: &str) -> Result<()> {
        let bytes =
            std::fs::read(from).with_context(|| format!("{}: cannot read", from.display()))?;
        self.write(name, &bytes)
    }

    /// Renames the folder into place; fails if `dest` appeared meanwhile.
    pub fn commit(mut self) -> Result<PathBuf> {
        std::fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("{}: cannot create", self.dest.display()))?;
        self.done = true;
        Ok(self.dest.clone())
    }

    /// Puts the folder in place of `dest`: the old one is first renamed to `dest.old`, so a
    /// crash between the two renames leaves a whole folder at `dest` or at `dest.old` (see
    /// [`NewDir::old`]), then removed.
    pub fn replace(mut self) -> Result<PathBuf> {
        let old = Self::old(&self.dest);
        if old.exists() {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("{}: cannot remove", old.display()))?;
        }
        if self.dest.exists() {
            std::fs::rename(&self.dest, &old)
                .with_context(|| format!("{}: cannot move aside", self.dest.display()))?;
        }
        std::fs::rename(&self.tmp, &self.dest)
            .with_context(|| format!("{}: cannot move into place", self.dest.display()))?;
        self.done = true;
        if old.exists() {
            let _ = std::fs::remove_dir_all(&old);
        }
        Ok(self.dest.clone())
    }

    /// Where [`NewDir::replace`] keeps the previous folder while it swaps.
    pub fn old(dest: &Path) -> PathBuf {
        dest.with_extension("old")
    }
}

impl Drop for NewDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("skyscribe-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn files_replace_whole_and_leave_no_temporaries() {
        let dir = scratch("file");
        let path = dir.join("a.json");
        write_file(&path, b"one").unwrap();
        write_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o644 & !umask(), "mode {mode:o}");
        }
    }

    #[test]
    fn folders_appear_whole_or_not_at_all() {
        let dir = scratch("dir");
        let dest = dir.join("model");
        {
            let d = NewDir::create(&dest).unwrap();
            d.write("config.json", b"{}").unwrap();
            // dropped without commit
        }
        assert!(!dest.exists());
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "temporary folder left"
        );
        let d = NewDir::create(&dest).unwrap();
        d.write("config.json", b"{}").unwrap();
        d.commit().unwrap();
        assert!(dest.join("config.json").is_file());
        assert!(
            NewDir::create(&dest).is_err(),
            "an existing folder is refused"
        );
        let d = NewDir::replacing(&dest).unwrap();
        d.write("state.json", b"2").unwrap();
        d.replace().unwrap();
        assert!(dest.join("state.json").is_file() && !dest.join("config.json").exists());
        assert!(!NewDir::old(&dest).exists());
    }
}
