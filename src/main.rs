use std::process::ExitCode;

use clap::Parser;
use wechat_gateway::cli::{Cli, Command};
use wechat_gateway::{config, sandbox, simulate, startup, telemetry};

fn main() -> ExitCode {
    limit_malloc_arenas();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Caps glibc's malloc arenas at one per core, before any thread starts. Its default (eight per
/// core) gives each of the HTTP workers, the runtime's threads and the store's threads an arena of
/// its own, each keeping what it freed: with the cap, the peak RSS under load fell by 5–10 MiB
/// and the CPU per callback stayed within the noise of alternating runs (BENCHMARKS.md, "Fourth
/// session"). `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only sets glibc's own tunable; no other thread exists yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    let Some(path) = cli.config.config.clone() else {
        eprintln!("error: no configuration: pass --config FILE or set WECHAT_GATEWAY_CONFIG");
        return ExitCode::from(2);
    };
    let cfg = match config::load(&path) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            // Valid but risky settings: printed loudly, without failing the check.
            for warning in cfg.warnings() {
                eprintln!("WARNING: {warning}");
            }
            println!(
                "{}: valid ({} account(s))",
                path.display(),
                cfg.accounts.len()
            );
            ExitCode::SUCCESS
        }
        Command::Simulate(args) => match simulate::run(&cfg, &args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("simulate: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Sandbox => {
            telemetry::init_logging(&cfg.log);
            match sandbox::run(cfg).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "sandbox stopped with an error");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve => {
            telemetry::init_logging(&cfg.log);
            match startup::Application::build(cfg).await {
                Ok(app) => match app.run_until_stopped().await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "gateway stopped with an error");
                        ExitCode::FAILURE
                    }
                },
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "gateway failed to start");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
