use std::process::ExitCode;

use clap::Parser;
use wechat_gateway::cli::{Cli, Command};
use wechat_gateway::{config, sandbox, simulate, startup, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
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
