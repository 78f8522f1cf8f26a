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
    // `create_new`: never follow or reuse a file someone else put there.
    let mut file = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    match fs::metadata(path) {
        Ok(old) if old.is_file() => file.set_permissions(old.permissions())?,
        _ => {}
    }
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(tmp, path)?;
    File::open(directory(path))?.sync_all()
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
}
