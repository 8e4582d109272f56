//! `wechat-gateway sandbox` as a child process: the real binary on the example configuration
//! (`config/example.toml`), its HTTP and gRPC listeners moved to free loopback ports through
//! the environment (`WGW_HTTP__LISTEN`, `WGW_GRPC__LISTEN`), its output (logs and the events
//! printed as JSON lines) kept in a file. Stopped (SIGTERM) when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example configuration's admin token.
pub const EXAMPLE_ADMIN_TOKEN: &str = "dev-only-admin-token-change-me";

pub struct SandboxProcess {
    child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    /// Holds the stdout file.
    dir: tempfile::TempDir,
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The repository root: the examples run from there.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

impl SandboxProcess {
    /// Starts the sandbox with these extra environment variables and waits until it is ready.
    pub async fn start(env: &[(&str, String)]) -> Self {
        wechat_gateway::wechat::api::install_tls_provider();
        let dir = tempfile::tempdir().unwrap();
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let grpc: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let stdout = std::fs::File::create(dir.path().join("stdout")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_wechat-gateway"));
        cmd.args(["sandbox", "--config", "config/example.toml"])
            .current_dir(root())
            .env_remove("WECHAT_GATEWAY_CONFIG")
            .env("WGW_HTTP__LISTEN", http.to_string())
            .env("WGW_GRPC__LISTEN", grpc.to_string())
            .env("WGW_LINKS__PUBLIC_BASE_URL", format!("http://{http}"))
            .stderr(Stdio::from(stdout.try_clone().unwrap()))
            .stdout(Stdio::from(stdout));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("the gateway binary starts");
        let sandbox = Self {
            child,
            http,
            grpc,
            dir,
        };
        sandbox.wait_ready().await;
        sandbox
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client
                .get(format!("http://{}/readyz", self.http))
                .send()
                .await
            {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the sandbox did not become ready; its output:\n{}",
                self.stdout()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("stdout")
    }

    /// Everything the sandbox printed so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.stdout_path()).unwrap_or_default()
    }

    /// Waits until its stdout has a line with every one of `needles`; returns that line.
    pub async fn wait_for_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self
                .stdout()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needles:?} in the sandbox's output:\n{}",
                self.stdout()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for SandboxProcess {
    /// SIGTERM, so that the sandbox removes its temporary store; SIGKILL after 5 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
