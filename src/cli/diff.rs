//! `nolist diff` and `nolist apply`: the plan against the DNS providers.
//!
//! Both load the config, build the plan, pick the domains (`--domain`),
//! build each domain's provider (its own `provider`, else the top-level
//! one) and read what it holds of the RRsets nolist owns. `diff` prints the
//! differences and exits 0 (in sync), 1 (drift) or 2 (a provider could not
//! be read, or a config or usage error), like diff(1). `apply` prints the
//! same diff, checks the `--max-changes` guard per domain, asks (or takes
//! `--yes`), applies each domain's change set in one provider call, reads
//! it back, and reports per domain what was applied and what is left.

//!
//! Both need the DNS providers (the `providers` feature, on by default);
//! a nolist built without them refuses both with exit code 2.

use std::path::PathBuf;
#[cfg(not(feature = "providers"))]
use std::process::ExitCode;

use clap::ValueEnum;

#[cfg(not(feature = "providers"))]
use super::Failure;

#[cfg(feature = "providers")]
mod live;
#[cfg(feature = "providers")]
pub(crate) use live::{apply, diff};

#[derive(Debug, clap::Args)]
pub(crate) struct DiffArgs {
    /// The nolist config file (YAML).
    #[arg(short, long, value_name = "FILE")]
    pub(super) config: PathBuf,
    /// Compare only this domain.
    #[arg(long, value_name = "NAME")]
    pub(super) domain: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub(super) format: DiffFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DiffFormat {
    /// `+`, `-`, `~` lines per domain.
    Text,
    /// The diff as JSON (schema nolist.diff/1).
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    /// The nolist config file (YAML).
    #[arg(short, long, value_name = "FILE")]
    pub(super) config: PathBuf,
    /// Apply only this domain.
    #[arg(long, value_name = "NAME")]
    pub(super) domain: Option<String>,
    /// Apply without asking (required when standard input is not a terminal).
    #[arg(long)]
    pub(super) yes: bool,
    /// Refuse a domain whose change set has more record changes than this.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub(super) max_changes: usize,
}

/// Why `diff` and `apply` refuse in a nolist built without providers.
#[cfg(not(feature = "providers"))]
const WITHOUT_PROVIDERS: &str = "this nolist was built without DNS providers (feature `providers`)";

/// `nolist diff` without providers: a usage error (exit 2).
#[cfg(not(feature = "providers"))]
pub(crate) fn diff(_: &DiffArgs) -> Result<ExitCode, Failure> {
    Err(Failure::Usage(WITHOUT_PROVIDERS.into()))
}

/// `nolist apply` without providers: a usage error (exit 2).
#[cfg(not(feature = "providers"))]
pub(crate) fn apply(_: &ApplyArgs) -> Result<ExitCode, Failure> {
    Err(Failure::Usage(WITHOUT_PROVIDERS.into()))
}

#[cfg(all(test, not(feature = "providers")))]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    #[test]
    fn diff_and_apply_refuse_without_providers() {
        for argv in [
            &["nolist", "diff", "-c", "nolist.yaml"][..],
            &["nolist", "apply", "-c", "nolist.yaml", "--yes"][..],
        ] {
            let result = match Cli::try_parse_from(argv).unwrap().command {
                Command::Diff(args) => diff(&args),
                Command::Apply(args) => apply(&args),
                other => panic!("{other:?}"),
            };
            let Err(Failure::Usage(message)) = result else {
                panic!("{argv:?}: {result:?}")
            };
            assert_eq!(message, WITHOUT_PROVIDERS);
        }
    }
}
