//! The command line: `serve` (default), `check-config`, `simulate`, `sandbox`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::simulate::SimulateArgs;

#[derive(Debug, Parser)]
#[command(
    name = "wechat-gateway",
    version,
    about = "WeChat callbacks in, normalized events out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: ConfigArg,
}

#[derive(Debug, Args, Clone)]
pub struct ConfigArg {
    /// Configuration file (TOML).
    #[arg(long, global = true, env = "WECHAT_GATEWAY_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve,
    /// Validate a configuration and print every problem.
    CheckConfig,
    /// Send a correctly signed (and, where the account uses it, encrypted) sample callback to a
    /// running gateway, the way the WeChat platform would.
    Simulate(SimulateArgs),
    /// Run the gateway against a fake WeChat in the same process (offline, in memory, on the
    /// configured accounts): every admin route and Gateway rpc works without WeChat.
    Sandbox,
}
