//! One durable, atomic file write for nolist and its providers crate:
//! [`write_atomically`]. A reader sees the old content or the new, never
//! half a file, and once the call returns the new content survives a power
//! loss (the file and the directory entry are both on disk).
//!
//! It is a crate of its own because both the main crate (zone files of
//! `plan --out`, the serial state) and the providers crate (the `zonefile`
//! backend) need it, and the providers crate must not depend on the main
//! crate.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces (or creates) `path` with `bytes`: a new file in the same
/// directory (so the rename cannot cross file systems) is written and
/// synced, renamed over `path`, and the directory is synced. An existing
/// file's permissions are kept; a new file gets the default mode (0666
/// less the umask). On any error the temporary file is removed and `path`
/// is as it was (unless only the final directory sync failed: then the new
/// content is in place but maybe not yet durable).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = write_then_rename(&tmp, path, bytes);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The steps of [`write_atomically`], without the cleanup.
fn write_then_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let file = write_temp(tmp, path, bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    File::open(directory(path))?.sync_all()
}

/// A new file `tmp` holding `bytes`, with the permissions of `path` when
/// that is an existing file; removed again when a step fails.
fn write_temp(tmp: &Path, path: &Path, bytes: &[u8]) -> io::Result<File> {
    // `create_new`: never follow or reuse a file someone else put there.
    let mut file = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    let mut fill = || {
        if let Ok(old) = fs::metadata(path)
            && old.is_file()
        {
            file.set_permissions(old.permissions())?;
        }
        file.write_all(bytes)
    };
    match fill() {
        Ok(()) => Ok(file),
        Err(e) => {
            drop(file);
            let _ = fs::remove_file(tmp);
            Err(e)
        }
    }
}

/// Why [`write_all_atomically`] failed, and with which file.
#[derive(Debug)]
pub struct WriteError {
    /// The file being written.
    pub path: PathBuf,
    /// What the OS said.
    pub source: io::Error,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "writing {}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// [`write_atomically`] for many files, with one sync of the file system
/// for all of them instead of one per file (10,000 zone files of `plan
/// --out` would otherwise be 20,000 syncs): every temporary file is
/// written, the file system is synced once (`syncfs`), then each is renamed
/// over its target, and each directory is synced once. A reader sees, for
/// each file, the old content or the new. On an error, the temporary files
/// not yet renamed are removed; the files already renamed keep their new
/// content.
pub fn write_all_atomically<'a>(
    files: impl IntoIterator<Item = (&'a Path, &'a [u8])>,
) -> Result<(), WriteError> {
    let mut pending: Vec<(PathBuf, &Path)> = Vec::new();
    let result = write_sync_rename(files, &mut pending);
    for (tmp, _) in &pending {
        let _ = fs::remove_file(tmp);
    }
    result
}

/// The steps of [`write_all_atomically`]; `pending` holds the temporary
/// files made, for the caller to remove what was not renamed.
fn write_sync_rename<'a>(
    files: impl IntoIterator<Item = (&'a Path, &'a [u8])>,
    pending: &mut Vec<(PathBuf, &'a Path)>,
) -> Result<(), WriteError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| WriteError { path, source }
    };
    let mut last = None;
    for (path, bytes) in files {
        let tmp = temp_path(path);
        let file = write_temp(&tmp, path, bytes).map_err(failed(path))?;
        pending.push((tmp, path));
        last = Some((file, path));
    }
    let Some((file, path)) = last else {
        return Ok(());
    };
    sync_file_system(&file).map_err(failed(path))?;
    let mut directories: Vec<&Path> = Vec::new();
    // A temporary file already renamed is gone: the caller's cleanup of
    // `pending` then finds nothing there.
    for (tmp, path) in pending.iter() {
        fs::rename(tmp, path).map_err(failed(path))?;
        let dir = directory(path);
        if !directories.contains(&dir) {
            directories.push(dir);
        }
    }
    for dir in directories {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(failed(dir))?;
    }
    Ok(())
}

/// Flushes every file of the file system that holds `file` to disk.
fn sync_file_system(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs only reads the descriptor, which `file` keeps open.
    if unsafe { libc::syncfs(file.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A name next to `path` that no other writer uses: the process id and a
/// counter tell apart concurrent writers of the same file (other processes
/// and other threads of this one).
fn temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(".{}.{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// The directory holding `path` (`.` for a bare file name).
fn directory(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zone");
        fs::write(&path, "old content, longer than the new\n").unwrap();
        write_atomically(&path, b"new\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new\n");
        assert_eq!(names(dir.path()), ["zone"]);
    }

    #[test]
    fn a_new_file_gets_the_default_mode_and_an_old_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let reference = dir.path().join("reference");
        fs::write(&reference, "").unwrap();
        let new = dir.path().join("new");
        write_atomically(&new, b"x").unwrap();
        assert_eq!(mode(&new), mode(&reference));

        let kept = dir.path().join("kept");
        fs::write(&kept, "old").unwrap();
        fs::set_permissions(&kept, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&kept, b"new").unwrap();
        assert_eq!(mode(&kept), 0o640);
        assert_eq!(fs::read_to_string(&kept).unwrap(), "new");
    }

    #[test]
    fn a_failed_rename_leaves_the_target_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("taken");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), "keep").unwrap();
        let err = write_atomically(&target, b"x").unwrap_err();
        assert_ne!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert_eq!(names(dir.path()), ["taken"]);
        assert_eq!(names(&target), ["inside"]);
    }

    #[test]
    fn a_missing_directory_is_an_error_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("file");
        let err = write_atomically(&path, b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn concurrent_writers_of_one_file_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let contents: Vec<String> = (0..8).map(|i| format!("writer {i}\n")).collect();
        std::thread::scope(|s| {
            for text in &contents {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomically(path, text.as_bytes()).unwrap();
                    }
                });
            }
        });
        assert!(contents.contains(&fs::read_to_string(&path).unwrap()));
        assert_eq!(names(dir.path()), ["state.json"]);
    }

    #[test]
    fn a_bare_file_name_syncs_the_current_directory() {
        assert_eq!(directory(Path::new("zone")), Path::new("."));
        assert_eq!(directory(Path::new("/srv/zone")), Path::new("/srv"));
    }

    #[test]
    fn many_files_are_written_with_one_sync_and_no_temporary_file_left() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::create_dir_all(&a).unwrap();
        fs::create_dir_all(&b).unwrap();
        fs::write(a.join("1.zone"), "old").unwrap();
        fs::set_permissions(a.join("1.zone"), fs::Permissions::from_mode(0o600)).unwrap();
        let files = [
            (a.join("1.zone"), "one"),
            (a.join("2.zone"), "two"),
            (b.join("3.zone"), "three"),
        ];
        write_all_atomically(files.iter().map(|(p, t)| (p.as_path(), t.as_bytes()))).unwrap();
        for (path, text) in &files {
            assert_eq!(fs::read_to_string(path).unwrap(), *text);
        }
        assert_eq!(mode(&a.join("1.zone")), 0o600, "an old file keeps its mode");
        assert_eq!(names(&a), ["1.zone", "2.zone"]);
        assert_eq!(names(&b), ["3.zone"]);
        write_all_atomically(std::iter::empty()).unwrap();
    }

    #[test]
    fn a_failed_rename_removes_every_temporary_file_and_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("2.zone");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("keep"), "").unwrap();
        let files = [
            (dir.path().join("1.zone"), "one"),
            (blocked.clone(), "two"),
            (dir.path().join("3.zone"), "three"),
        ];
        let err = write_all_atomically(files.iter().map(|(p, t)| (p.as_path(), t.as_bytes())))
            .unwrap_err();
        assert_eq!(err.path, blocked);
        assert!(err.to_string().starts_with("writing "), "{err}");
        // Renamed in order: the first is new, the third never appeared.
        assert_eq!(
            fs::read_to_string(dir.path().join("1.zone")).unwrap(),
            "one"
        );
        assert_eq!(names(dir.path()), ["1.zone", "2.zone"]);
    }
}
