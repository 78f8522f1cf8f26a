//! `diff` and `apply` with the DNS providers: build each domain's provider
//! from its config table, read it, compare, apply.

use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::process::ExitCode;

use nolist_providers::{Change, Provider};

use super::{ApplyArgs, DiffArgs, DiffFormat};
use crate::cli::{EXIT_FAILED, EXIT_USAGE, Failure, findings_text, init_logging, print, runtime};
use crate::config::{self, Name};
use crate::plan::Plan;
use crate::sync::report::{self, DomainDiff};
use crate::sync::{self, Desired};

/// One domain to compare: its plan and its provider.
struct Target {
    desired: Desired,
    domain: String,
    provider: Box<dyn Provider>,
}

/// Config → plan → the selected domains with their providers built.
fn targets(config_path: &Path, domain: Option<&str>) -> Result<(Plan, Vec<Target>), Failure> {
    let config = config::load(config_path)?;
    let mut plan = Plan::build(&config);
    if let Some(wanted) = domain {
        let name = Name::parse(wanted).map_err(|e| Failure::Usage(format!("--domain: {e}")))?;
        if !plan.retain_domain(&name) {
            return Err(Failure::Usage(format!(
                "--domain: {} is not configured in {}",
                name.as_str(),
                config_path.display()
            )));
        }
    }
    let mut targets = Vec::new();
    for zone in &plan.zones {
        let domain = config
            .domains
            .iter()
            .find(|d| d.name == zone.origin)
            .expect("every zone comes from a domain");
        let Some(table) = config.provider_for(domain) else {
            return Err(Failure::Usage(format!(
                "{}: domain {} has no provider: set `provider` at the top level or in the domain",
                config_path.display(),
                zone.origin.as_str()
            )));
        };
        let settings = sync::provider::settings(&table.settings);
        let provider = nolist_providers::build(&settings).map_err(|e| {
            Failure::Usage(format!("domain {}: provider: {e}", zone.origin.as_str()))
        })?;
        let desired = sync::desired(zone).map_err(|e| Failure::Usage(e.to_string()))?;
        targets.push(Target {
            desired,
            domain: zone.origin.as_str().to_owned(),
            provider,
        });
    }
    Ok((plan, targets))
}

/// Reads every target (one after the other: providers rate-limit).
async fn read_all(targets: &[Target]) -> Vec<DomainDiff> {
    let mut out = Vec::new();
    for t in targets {
        let outcome = sync::read(t.provider.as_ref(), &t.desired).await;
        out.push(DomainDiff {
            domain: t.domain.clone(),
            provider: t.provider.kind(),
            outcome,
        });
    }
    out
}

pub(crate) fn diff(args: &DiffArgs) -> Result<ExitCode, Failure> {
    // Retries and slow providers are logged (warn) to stderr.
    let _logging = init_logging();
    let (plan, targets) = targets(&args.config, args.domain.as_deref())?;
    eprint!("{}", findings_text(&args.config, &plan.findings));
    let runtime = runtime()?;
    let diffs = runtime.block_on(read_all(&targets));
    print(&match args.format {
        DiffFormat::Text => report::text(&diffs),
        DiffFormat::Json => report::json(&diffs),
    })?;
    Ok(if diffs.iter().any(|d| d.outcome.is_err()) {
        ExitCode::from(EXIT_USAGE)
    } else if diffs.iter().all(DomainDiff::in_sync) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}

pub(crate) fn apply(args: &ApplyArgs) -> Result<ExitCode, Failure> {
    let _logging = init_logging();
    let (plan, targets) = targets(&args.config, args.domain.as_deref())?;
    eprint!("{}", findings_text(&args.config, &plan.findings));
    if plan.has_errors() {
        eprintln!("nolist: the plan has lint errors; nothing was applied");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let runtime = runtime()?;
    let diffs = runtime.block_on(read_all(&targets));
    print(&report::text(&diffs))?;

    // What to apply: read, drifting, and within the guard.
    let mut todo: Vec<(&Target, &[Change])> = Vec::new();
    let mut refused = Vec::new();
    for (t, d) in targets.iter().zip(&diffs) {
        let Ok(changes) = &d.outcome else { continue };
        if changes.is_empty() {
            continue;
        }
        let n = sync::lines(changes).len();
        if n > args.max_changes {
            refused.push(format!(
                "{}: refused: {n} record changes exceed --max-changes {} (raise it to apply them)",
                t.domain, args.max_changes
            ));
        } else {
            todo.push((t, changes));
        }
    }
    for r in &refused {
        eprintln!("{r}");
    }
    let unread = diffs.iter().filter(|d| d.outcome.is_err()).count();
    if todo.is_empty() {
        let ok = unread == 0 && refused.is_empty();
        eprintln!(
            "{}",
            if ok {
                "nothing to apply: every domain is in sync"
            } else {
                "nothing applied"
            }
        );
        return Ok(exit(ok));
    }
    if !args.yes {
        confirm(
            todo.iter().map(|(_, c)| sync::lines(c).len()).sum(),
            todo.len(),
        )?;
    }

    let mut ok = unread == 0 && refused.is_empty();
    for (t, changes) in todo {
        let n = sync::lines(changes).len();
        let result = runtime.block_on(sync::apply(t.provider.as_ref(), &t.desired, changes));
        match result {
            Ok(left) if left.is_empty() => {
                eprintln!("{}: applied {n} record changes; in sync", t.domain);
            }
            Ok(left) => {
                ok = false;
                eprintln!(
                    "{}: applied, but the provider still differs from the plan:",
                    t.domain
                );
                for line in sync::lines(&left) {
                    eprintln!("  {}", report::line_text(&line));
                }
            }
            Err(e) => {
                ok = false;
                eprintln!("{}: FAILED: {e}", t.domain);
                // Read back to say what did and did not get through.
                match runtime.block_on(sync::read(t.provider.as_ref(), &t.desired)) {
                    Ok(left) if left.is_empty() => {
                        eprintln!("{}: nevertheless in sync now", t.domain);
                    }
                    Ok(left) => {
                        let left_lines = sync::lines(&left);
                        eprintln!(
                            "{}: {} of {n} record changes not applied:",
                            t.domain,
                            left_lines.len()
                        );
                        for line in left_lines {
                            eprintln!("  {}", report::line_text(&line));
                        }
                    }
                    Err(e) => eprintln!("{}: cannot read back: {e}", t.domain),
                }
            }
        }
    }
    Ok(exit(ok))
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// Asks on the terminal; refuses when standard input is not one.
fn confirm(changes: usize, domains: usize) -> Result<(), Failure> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::Usage(
            "standard input is not a terminal: pass --yes to apply without asking".into(),
        ));
    }
    eprint!(
        "Apply {changes} record change{} to {domains} domain{}? [y/N] ",
        if changes == 1 { "" } else { "s" },
        if domains == 1 { "" } else { "s" }
    );
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|source| Failure::Io {
            context: "reading the answer".into(),
            source,
        })?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(Failure::Declined)
    }
}
