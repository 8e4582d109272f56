//! The real `wechat-gateway` binary as a child process (for tests that SIGKILL it or measure its
//! memory): started with a configuration file, its HTTP and gRPC addresses read from its log.
//! Killed when dropped. `GATEWAY_UNDER_TEST` points the tests at another build of the binary
//! (e.g. an older commit's, to compare a measurement before and after a change).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct GatewayProcess {
    child: Child,
    pub addr: SocketAddr,
    pub grpc_addr: SocketAddr,
}

impl GatewayProcess {
    pub fn start(config: &Path) -> Self {
        let binary = std::env::var("GATEWAY_UNDER_TEST")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_wechat-gateway").to_owned());
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gateway binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps reading, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("http_addr=") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the gateway logs its address");
        let field = |key: &str| -> SocketAddr {
            let rest = line.split(key).nth(1).expect("the address is logged");
            let addr = rest.split_whitespace().next().unwrap_or("");
            addr.parse().expect("a socket address")
        };
        Self {
            child,
            addr: field("http_addr="),
            grpc_addr: field("grpc_addr="),
        }
    }

    /// The process's resident memory now (`VmRSS` of `/proc/<pid>/status`), in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the gateway process runs");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// SIGKILL: no graceful shutdown, no flush.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
