//! A private `/etc/resolv.conf` for the processes a test starts: the
//! system resolver (glibc's, which Postfix's `dnsblog` uses) takes no port
//! and no file name, only the nameservers of `/etc/resolv.conf`. The
//! calling thread moves into a mount namespace of its own (with every
//! mount private, so nothing propagates back) where a file the test wrote
//! is bind-mounted over `/etc/resolv.conf`. The host's file is never
//! touched, and nothing outside the thread and its children sees the new
//! one. Dropping the guard moves the thread back; the namespace, and the
//! mount, go away with the last process in it.

use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The thread's own `/etc/resolv.conf`; dropping it restores the thread's
/// mount namespace and working directory.
pub struct PrivateResolvConf {
    /// The thread's mount namespace before, to go back to.
    home: File,
    /// The working directory before (`setns` resets it to `/`).
    cwd: PathBuf,
    /// Holds the file that is mounted.
    _dir: tempfile::TempDir,
}

impl PrivateResolvConf {
    /// Moves the calling thread into a new mount namespace whose
    /// `/etc/resolv.conf` names only `nameserver` (port 53: the resolver
    /// has no other), with a 1 s timeout and two attempts. Call it after
    /// `util::require_root`. Panics if any step fails: the test must never
    /// go on with the host's resolver, nor change the host's file.
    pub fn enter(nameserver: IpAddr) -> PrivateResolvConf {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("resolv.conf");
        let mut f = File::create(&file).expect("resolv.conf");
        writeln!(f, "nameserver {nameserver}\noptions timeout:1 attempts:2").expect("write");
        // Postfix's daemons run as user postfix.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let home = File::open("/proc/thread-self/ns/mnt").expect("the thread's mount namespace");
        let cwd = std::env::current_dir().expect("cwd");
        // SAFETY: unshare changes only the calling thread's namespaces (and
        // gives it its own root and working directory).
        let ok = unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0;
        assert!(
            ok,
            "unshare(CLONE_NEWNS): {}",
            std::io::Error::last_os_error()
        );
        mount(None, "/", libc::MS_REC | libc::MS_PRIVATE);
        mount(
            Some(file.to_str().expect("UTF-8 path")),
            "/etc/resolv.conf",
            libc::MS_BIND,
        );
        PrivateResolvConf {
            home,
            cwd,
            _dir: dir,
        }
    }
}

impl Drop for PrivateResolvConf {
    fn drop(&mut self) {
        // SAFETY: setns on a valid descriptor changes only the calling
        // thread's mount namespace (the thread has its own root since the
        // unshare).
        let ok = unsafe { libc::setns(self.home.as_raw_fd(), libc::CLONE_NEWNS) } == 0;
        if !ok {
            eprintln!(
                "warning: setns back to the mount namespace: {}",
                std::io::Error::last_os_error()
            );
        }
        let _ = std::env::set_current_dir(&self.cwd);
    }
}

/// `mount(source, target, NULL, flags, NULL)`; panics on failure.
fn mount(source: Option<&str>, target: &str, flags: libc::c_ulong) {
    let source = source.map(|s| CString::new(s).expect("no NUL"));
    let target_c = CString::new(target).expect("no NUL");
    // SAFETY: the strings are NUL-terminated and outlive the call; a null
    // source, type and data are allowed for these flags.
    let rc = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target_c.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    assert!(
        rc == 0,
        "mount {target} (flags {flags:#x}): {}",
        std::io::Error::last_os_error()
    );
}
