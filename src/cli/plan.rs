//! `nolist plan`: compute, lint and print (or write) the plan.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use super::{EXIT_FAILED, Failure, findings_text, print, write_all_atomically};
use crate::config::{self, Name};
use crate::plan::{Plan, render};

#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
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
pub(crate) enum PlanFormat {
    /// RFC 1035 master-file records.
    Zone,
    /// The plan and lint findings as JSON.
    Json,
    /// An nsupdate script that replaces the owned records.
    Nsupdate,
}

pub(crate) fn run(args: &PlanArgs) -> Result<ExitCode, Failure> {
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
        let files: Vec<(PathBuf, String)> = plan
            .zones
            .iter()
            .map(|zone| {
                let path = dir.join(format!("{}.zone", zone.origin.as_str()));
                (path, render::zone(zone))
            })
            .collect();
        write_all_atomically(&files)?;
        for (path, _) in &files {
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
