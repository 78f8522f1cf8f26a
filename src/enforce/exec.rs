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
        .spawn()
        .map_err(spawn)?;
    // Feed and drain on threads: a tool that writes while we write (or
    // never reads) must not deadlock us.
    let feeder = child.stdin.take().map(|mut pipe| {
        let input = stdin.unwrap_or_default().to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        })
    });
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
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
    let status = loop {
        match child.try_wait().map_err(spawn)? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(EnforceError::Timeout {
                    tool: tool(),
                    seconds: timeout.as_secs(),
                });
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    if let Some(f) = feeder {
        let _ = f.join();
    }
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
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
        // A large input to a tool that reads it all does not deadlock.
        let big = vec![b'x'; 4 << 20];
        assert_eq!(
            run("wc", &["-c"], Some(&big), TIMEOUT).unwrap(),
            b"4194304\n"
        );
    }
}
