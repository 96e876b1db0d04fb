//! The command line: `serve`, `scan`, `patch`, `hosts-toml`, `config check` and
//! `store check`. The only place that uses `anyhow` and
//! prints to the terminal.

mod hosts_toml;
mod image_ref;
mod patch;
mod scan;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{defaults, Config, ConfigError, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "patchpull",
    version,
    about = "A registry-side proxy that patches container images on pull"
)]
pub struct Cli {
    /// Configuration file (TOML). Without it, config/patchpull.toml is read when present,
    /// else the embedded defaults apply. PATCHPULL_* variables override either.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the registry proxy.
    Serve,
    /// Read an image's packages and plan its fixes (from --report).
    Scan(scan::ScanArgs),
    /// Patch an image's OS packages: one new layer on the original layers.
    Patch(Box<patch::PatchArgs>),
    /// Write containerd hosts.toml files that pull every configured upstream through patchpull.
    HostsToml(hosts_toml::HostsTomlArgs),
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Inspect the store at `storage.path`.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Subcommand)]
enum StoreCommand {
    /// Check that every blob hashes to its name, every recorded manifest and patched image
    /// has its content, and no temp file is left over; lists each problem, exits 1 on any.
    Check,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (secrets masked), or say precisely what is wrong.
    Check,
}

/// sysexits' EX_CONFIG: the configuration is wrong.
const EXIT_CONFIG: u8 = 78;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(defaults::CONFIG_FILE), false),
    };
    let config = match Config::load(&path, explicit) {
        Ok(c) => c,
        Err(e) => {
            report_config_error(&path, explicit, &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check,
        } => {
            let source = if path.exists() {
                format!(
                    "# effective configuration: defaults < {} < PATCHPULL_* environment\n",
                    path.display()
                )
            } else {
                "# effective configuration: embedded defaults < PATCHPULL_* environment\n"
                    .to_string()
            };
            print!("{source}{}", config.to_display_toml());
            ExitCode::SUCCESS
        }
        Command::Store {
            command: StoreCommand::Check,
        } => store_check(&config.storage.path),
        Command::Scan(args) => {
            init_tracing(&config);
            match scan::run(config, args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Patch(args) => {
            // Progress lines own stderr; log lines join them only when asked (`-v`), or
            // go to `--log-file`, so the two never interleave on a terminal.
            match &args.log_file {
                Some(path) => match std::fs::File::create(path) {
                    Ok(file) => init_tracing_to(&config, std::sync::Mutex::new(file), false),
                    Err(e) => {
                        eprintln!("error: --log-file {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                },
                None if args.verbose => init_tracing(&config),
                None => {}
            }
            match patch::run(config, *args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::HostsToml(args) => match hosts_toml::run(config, args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Serve => {
            init_tracing(&config);
            match serve::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn store_check(root: &std::path::Path) -> ExitCode {
    let report = crate::store::check::check(root);
    for problem in &report.problems {
        println!("problem: {problem}");
    }
    let summary = format!(
        "{}: {} blobs, {} manifest entries, {} patched-image records checked",
        root.display(),
        report.blobs,
        report.manifests,
        report.records
    );
    if report.problems.is_empty() {
        println!("ok: {summary}");
        ExitCode::SUCCESS
    } else {
        println!("{} problems: {summary}", report.problems.len());
        ExitCode::FAILURE
    }
}

fn report_config_error(path: &std::path::Path, explicit: bool, e: &ConfigError) {
    let origin = if path.exists() || explicit {
        format!("{}", path.display())
    } else {
        "embedded defaults".to_string()
    };
    eprintln!("error: configuration ({origin}): {e}");
}

fn init_tracing(config: &Config) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    init_tracing_to(config, std::io::stderr, ansi);
}

fn init_tracing_to<W>(config: &Config, writer: W, ansi: bool)
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new(defaults::LOG_LEVEL));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
