//! Running the firewall tools: no shell, arguments as a vector, input on
//! stdin, output captured, and a deadline after which the tool is killed
//! (a hung `fail2ban-client` must not stall enforcement forever).

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::EnforceError;

/// How long a tool may run by default.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `program args…`, feeding `stdin`, and returns its stdout when it
/// exits 0. A non-zero exit is [`EnforceError::Failed`] with its stderr.
pub fn run(
    program: &str,
    args: &[&str],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Vec<u8>, EnforceError> {
    use std::os::unix::process::CommandExt;
    let tool = || {
        std::iter::once(program)
            .chain(args.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let spawn = |source| EnforceError::Spawn {
        tool: program.to_owned(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills what it started too.
        .process_group(0)
        .spawn()
        .map_err(spawn)?;
    let group = i32::try_from(child.id()).unwrap_or(0);
    let kill = |child: &mut std::process::Child| {
        if group > 0 {
            // SAFETY: kill(2) with a negative pid signals that process group.
            unsafe {
                libc::kill(-group, libc::SIGKILL);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    // Feed and drain on threads: a tool that writes while we write (or
    // never reads) must not deadlock us. Their results come back through
    // channels, waited for no longer than the deadline: a background
    // process that keeps a pipe open must not hang us either.
    if let Some(mut pipe) = child.stdin.take() {
        let input = stdin.unwrap_or_default().to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let timed_out = || EnforceError::Timeout {
        tool: tool(),
        seconds: timeout.as_secs(),
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill(&mut child);
                return Err(timed_out());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => {
                kill(&mut child);
                return Err(spawn(e));
            }
        }
    };
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100))
    };
    let Ok(stdout) = out.recv_timeout(left()) else {
        kill(&mut child);
        return Err(timed_out());
    };
    let stderr = err.recv_timeout(left()).unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        let mut text = String::from_utf8_lossy(&stderr).trim().to_owned();
        if text.is_empty() {
            text = format!("{status}");
        }
        Err(EnforceError::Failed {
            tool: tool(),
            stderr: text,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_errors_and_timeouts() {
        let out = run("cat", &[], Some(b"hello"), TIMEOUT).unwrap();
        assert_eq!(out, b"hello");
        match run("sh", &["-c", "echo oops >&2; exit 3"], None, TIMEOUT) {
            Err(EnforceError::Failed { stderr, .. }) => assert_eq!(stderr, "oops"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run("/nonexistent/tool", &[], None, TIMEOUT),
            Err(EnforceError::Spawn { .. })
        ));
        assert!(matches!(
            run("sleep", &["5"], None, Duration::from_millis(100)),
            Err(EnforceError::Timeout { .. })
        ));
        // A background process that keeps the pipe open does not hang us.
        let began = Instant::now();
        let out = run(
            "sh",
            &["-c", "sleep 30 & echo started"],
            None,
            Duration::from_secs(1),
        );
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "{:?}",
            began.elapsed()
        );
        assert!(matches!(out, Err(EnforceError::Timeout { .. })), "{out:?}");
        // A large input to a tool that reads it all does not deadlock.
        let big = vec![b'x'; 4 << 20];
        assert_eq!(
            run("wc", &["-c"], Some(&big), TIMEOUT).unwrap(),
            b"4194304\n"
        );
    }
}
