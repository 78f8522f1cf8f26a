//! The command line: raw flags (clap) are turned into calls into the
//! library, and this module alone prints. Exit codes follow the contract:
//! 0 ok, 1 checks failed or lint errors, 2 usage or config error.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, ConfigError, Name};
use crate::plan::{Finding, Plan, render};

/// Runs a mail domain's nolisting defence end to end.
#[derive(Debug, Parser)]
#[command(name = "nolist", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compute and lint the MX layout; print it as zone records, JSON or an nsupdate script.
    Plan(PlanArgs),
}

#[derive(Debug, clap::Args)]
struct PlanArgs {
    /// The nolist config file (YAML).
    #[arg(short, long, value_name = "FILE")]
    config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Zone)]
    format: PlanFormat,
    /// Plan only this domain.
    #[arg(long, value_name = "NAME")]
    domain: Option<String>,
    /// Write DIR/<domain>.zone for each domain instead of printing (zone format only).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PlanFormat {
    /// RFC 1035 master-file records.
    Zone,
    /// The plan and lint findings as JSON.
    Json,
    /// An nsupdate script that replaces the owned records.
    Nsupdate,
}

/// What went wrong, mapped to an exit code.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Bad config or bad arguments: exit 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    /// Output could not be written: exit 2.
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
}

/// Exit code for "checks failed / lint errors / drift".
const EXIT_FAILED: u8 = 1;
/// Exit code for usage and config errors.
const EXIT_USAGE: u8 = 2;

/// Parses `std::env::args`, runs the command and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(EXIT_USAGE));
        }
    };
    let result = match cli.command {
        Command::Plan(args) => plan(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nolist: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn plan(args: &PlanArgs) -> Result<ExitCode, Failure> {
    if args.out.is_some() && args.format != PlanFormat::Zone {
        return Err(Failure::Usage(
            "--out writes zone files; use it with --format zone".into(),
        ));
    }
    let config = config::load(&args.config)?;
    let mut plan = Plan::build(&config);
    if let Some(wanted) = &args.domain {
        let name = Name::parse(wanted).map_err(|e| Failure::Usage(format!("--domain: {e}")))?;
        if !plan.retain_domain(&name) {
            return Err(Failure::Usage(format!(
                "--domain: {} is not configured in {}",
                name.as_str(),
                args.config.display()
            )));
        }
    }
    let failed = plan.has_errors();
    eprint!("{}", findings_text(&args.config, &plan.findings));

    if args.format == PlanFormat::Json {
        print(&render::json(&plan))?;
    } else if failed {
        eprintln!("nolist: the plan has lint errors; nothing was printed or written");
    } else if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|source| Failure::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
        for zone in &plan.zones {
            let path = dir.join(format!("{}.zone", zone.origin.as_str()));
            write_atomically(&path, &render::zone(zone))?;
            eprintln!("wrote {}", path.display());
        }
    } else {
        let render_one = match args.format {
            PlanFormat::Nsupdate => render::nsupdate,
            _ => render::zone,
        };
        let text: Vec<String> = plan.zones.iter().map(render_one).collect();
        print(&text.join("\n"))?;
    }
    Ok(if failed {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// Lint findings as `file:line:col: severity[id]: message` lines.
fn findings_text(config: &Path, findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = write!(out, "{}", config.display());
        if let Some(at) = f.at {
            let _ = write!(out, ":{}:{}", at.line, at.column);
        }
        let _ = writeln!(out, ": {}[{}]: {}", f.severity, f.id, f.message);
    }
    out
}

/// Writes to stdout; a closed pipe (`nolist plan | head`) is not an error.
fn print(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::Io {
            context: "writing to standard output".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Writes `path` (in an existing directory) through a temporary file and a
/// rename, so a reader never sees half a zone.
fn write_atomically(path: &Path, text: &str) -> Result<(), Failure> {
    let io_err = |source| Failure::Io {
        context: format!("writing {}", path.display()),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}
