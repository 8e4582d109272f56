//! The real `wechat-gateway` binary as a child process (for tests that SIGKILL it, read its log
//! or measure its memory): started with a configuration file, its HTTP and gRPC addresses read
//! from its log, every line it writes to stderr kept, its stdout (the JSON lines of the stdout sink)
//! passed on line by line. Killed when dropped. `GATEWAY_UNDER_TEST`
//! points the tests at another build of the binary (e.g. an older commit's, to compare a
//! measurement before and after a change).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct GatewayProcess {
    child: Child,
    pub addr: SocketAddr,
    /// Every line of its log (stderr) so far.
    log: Arc<Mutex<Vec<String>>>,
    pub grpc_addr: SocketAddr,
    /// The lines the gateway printed on stdout, as they come.
    pub stdout: std::sync::mpsc::Receiver<String>,
}

impl GatewayProcess {
    pub fn start(config: &Path) -> Self {
        let binary = std::env::var("GATEWAY_UNDER_TEST")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_wechat-gateway").to_owned());
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gateway binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = log.clone();
        // Keeps reading, so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("http_addr=") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(line.clone());
                    }
                }
                kept.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (lines, stdout_lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
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
            log,
            stdout: stdout_lines,
        }
    }

    /// The log lines that contain `needle`, once there are at least `count` of them (panics
    /// after 10 s).
    pub fn wait_for_log(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<String> = (self.log.lock().unwrap().iter())
                .filter(|l| l.contains(needle))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{count} log lines with {needle:?} expected, {} found",
                found.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
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
