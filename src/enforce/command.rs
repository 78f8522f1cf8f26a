//! The command backend: the operator's own programs ban and unban, one
//! call per target, run without a shell from argv templates
//! (`["/usr/local/sbin/ban", "{ip}", "{seconds}"]`). The only values put
//! into an argument are an address or CIDR network as nolist prints it and
//! a number of seconds, and both are checked again before each call.
//!
//! With a `list` command (one address or network per output line) the
//! firewall is read back like the other backends. Without it, nolist
//! remembers what it applied (the daemon keeps that in the store), and at
//! start re-runs `ban` for every ban in force and `unban` for what it had
//! applied that is no longer banned, so `ban` must be idempotent.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::{Change, EnforceError, Enforcer, Report, WriteOnly, element, exec, parse_element};
use crate::config::{ArgvTemplate, CommandSpec};

/// The command backend.
#[derive(Clone, Debug)]
pub struct Commands {
    spec: CommandSpec,
    /// Applied by this process (without `list`).
    sure: BTreeSet<IpNet>,
    /// Applied before a restart; unbanned at the first reconcile unless
    /// still banned.
    maybe: BTreeSet<IpNet>,
    /// Nothing reconciled yet: the first reconcile re-applies everything.
    fresh: bool,
}

impl Commands {
    /// The backend for `bans.enforce.command`.
    pub fn new(spec: CommandSpec) -> Commands {
        Commands {
            spec,
            sure: BTreeSet::new(),
            maybe: BTreeSet::new(),
            fresh: true,
        }
    }

    fn call(&self, template: &ArgvTemplate, net: &IpNet, seconds: u64) -> Result<(), EnforceError> {
        let ip = element(net);
        let secs = seconds.to_string();
        // Defence in depth: nothing but address characters and digits ever
        // reaches an argument.
        debug_assert!(
            ip.bytes()
                .all(|b| b.is_ascii_hexdigit() || b".:/".contains(&b))
        );
        let argv = template.render(&ip, &secs);
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        exec::run(&argv[0], &args, None, self.spec.timeout.0).map(|_| ())
    }

    /// Runs `template` for each target, on past failures; returns the
    /// targets that succeeded and the first error with the failure count.
    fn each<'a>(
        &self,
        template: &ArgvTemplate,
        targets: impl Iterator<Item = (&'a IpNet, u64)>,
    ) -> (Vec<IpNet>, Option<EnforceError>) {
        let mut done = Vec::new();
        let mut first: Option<EnforceError> = None;
        let mut failed = 0usize;
        for (net, secs) in targets {
            match self.call(template, net, secs) {
                Ok(()) => done.push(*net),
                Err(e) => {
                    failed += 1;
                    first.get_or_insert(e);
                }
            }
        }
        let error = first.map(|e| match e {
            EnforceError::Failed { tool, stderr } if failed > 1 => EnforceError::Failed {
                tool,
                stderr: format!("{stderr} (and {} more failed calls)", failed - 1),
            },
            e => e,
        });
        (done, error)
    }
}

impl Enforcer for Commands {
    fn name(&self) -> &'static str {
        "command"
    }

    /// The programs exist and are executable; with `list`, it runs.
    fn check(&mut self) -> Result<(), EnforceError> {
        for template in [
            Some(&self.spec.ban),
            Some(&self.spec.unban),
            self.spec.list.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let program = &template.0[0];
            let meta = std::fs::metadata(program).map_err(|source| EnforceError::Spawn {
                tool: program.clone(),
                source,
            })?;
            if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0 {
                return Err(EnforceError::Spawn {
                    tool: program.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::PermissionDenied,
                        "not executable",
                    ),
                });
            }
        }
        if self.spec.list.is_some() {
            self.read()?;
        }
        Ok(())
    }

    fn read(&mut self) -> Result<Option<Vec<IpNet>>, EnforceError> {
        if let Some(list) = &self.spec.list {
            let args: Vec<&str> = list.0[1..].iter().map(String::as_str).collect();
            let out = exec::run(&list.0[0], &args, None, self.spec.timeout.0)?;
            let text = String::from_utf8_lossy(&out);
            return text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(parse_element)
                .collect::<Result<Vec<_>, _>>()
                .map(Some)
                .map_err(|message| EnforceError::Output {
                    tool: list.0[0].clone(),
                    message: message.to_string(),
                });
        }
        if self.fresh {
            return Ok(None);
        }
        Ok(Some(self.sure.iter().copied().collect()))
    }

    fn apply(&mut self, change: &Change) -> Result<Report, EnforceError> {
        let mut error = None;
        if change.rebuild {
            // First reconcile without read-back: whatever was applied before
            // the restart and is not banned now is lifted.
            let wanted: BTreeSet<IpNet> = change.add.iter().map(|(n, _)| *n).collect();
            let stale: Vec<IpNet> = std::mem::take(&mut self.maybe)
                .into_iter()
                .filter(|n| !wanted.contains(n))
                .collect();
            let (lifted, e) = self.each(&self.spec.unban, stale.iter().map(|n| (n, 0)));
            error = error.or(e);
            // What could not be lifted is retried as stray next time.
            let lifted: std::collections::HashSet<IpNet> = lifted.into_iter().collect();
            self.sure
                .extend(stale.into_iter().filter(|n| !lifted.contains(n)));
            self.fresh = false;
        }
        let (removed, e) = self.each(&self.spec.unban, change.remove.iter().map(|n| (n, 0)));
        error = error.or(e);
        for n in &removed {
            self.sure.remove(n);
        }
        let (added, e) = self.each(&self.spec.ban, change.add.iter().map(|(n, s)| (n, *s)));
        error = error.or(e);
        self.sure.extend(added);
        error.map_or(Ok(Report::of(change)), Err)
    }

    /// Without a `list` command nothing can be read back.
    fn write_only(&mut self) -> Option<&mut dyn WriteOnly> {
        if self.spec.list.is_none() {
            Some(self)
        } else {
            None
        }
    }
}

impl WriteOnly for Commands {
    fn applied(&self) -> Vec<IpNet> {
        self.sure.union(&self.maybe).copied().collect()
    }

    fn restore_applied(&mut self, applied: Vec<IpNet>) {
        self.maybe = applied.into_iter().collect();
    }
}
