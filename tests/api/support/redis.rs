//! Real `redis-server`s for the tests: one shared by the whole test run, started on first use,
//! and dedicated ones for tests that kill or restart Redis.
//!
//! Each listens on a free loopback port with the append-only file on (as production should run)
//! and RDB snapshots off; its data and `redis.log` live in a directory under `target/tmp`.
//! Tests share the shared server without interfering by using their own account ids
//! ([`shared_url`]) or a logical database no other test gets ([`fresh_db_url`]).
//!
//! The servers are started from one thread that lives as long as the test process and asks the
//! kernel to kill them when that thread ends (`PR_SET_PDEATHSIG`), so none outlives a test run,
//! however it ends: Rust never drops the shared server's static.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, LazyLock};
use std::time::{Duration, Instant};

/// Logical databases of the shared server; [`fresh_db_url`] hands out 1.. once each.
const DATABASES: u32 = 1024;

static SHARED: LazyLock<RedisServer> =
    LazyLock::new(|| RedisServer::launch(&["--databases", &DATABASES.to_string()]));
static NEXT_DB: AtomicU32 = AtomicU32::new(1);

/// The shared server, database 0. Tests on it keep apart by using their own account ids.
pub fn shared_url() -> String {
    SHARED.url()
}

/// The shared server with a logical database no other test of this run gets, for tests whose
/// account ids are fixed (the app's test configuration).
pub async fn fresh_db_url() -> String {
    let db = NEXT_DB.fetch_add(1, Ordering::Relaxed);
    assert!(
        db < DATABASES,
        "the shared redis-server has only {DATABASES} databases"
    );
    // The first call starts the server and waits for it: not on a runtime worker.
    let base = tokio::task::spawn_blocking(shared_url).await.unwrap();
    format!("{base}/{db}")
}

/// A `redis-server` of its own, killed when dropped. It fsyncs every write
/// (`appendfsync always`), so a kill loses nothing it acknowledged.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<String>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::launch(&["--appendfsync", "always"])
    }

    fn launch(extra_args: &[&str]) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("redis-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("a directory for redis-server under target/tmp");
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        // The free port may be taken by someone else before redis-server binds it: try again.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            match run(port, dir.path(), &extra_args) {
                Ok(child) => {
                    return Self {
                        child: Some(child),
                        port,
                        dir,
                        extra_args,
                    }
                }
                Err(e) => last_error = e,
            }
        }
        panic!("cannot start redis-server: {last_error}");
    }

    /// `redis://127.0.0.1:<port>` (database 0).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and data directory: it reloads
    /// its append-only file. Returns once it answers.
    pub fn restart(&mut self) {
        self.kill();
        let child = run(self.port, self.dir.path(), &self.extra_args)
            .unwrap_or_else(|e| panic!("cannot restart redis-server: {e}"));
        self.child = Some(child);
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Starts `redis-server` and waits until it answers; on failure, says why (its log's end).
fn run(port: u16, dir: &Path, extra_args: &[String]) -> Result<Child, String> {
    let log = dir.join("redis.log");
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "yes"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = match spawn(cmd) {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "redis-server is not installed (not found on PATH); the tests need a real Redis: \
             install it, e.g. `apt-get install redis-server` (CI does)"
        ),
        Err(e) => panic!("cannot run redis-server: {e}"),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited ({status}): {}", tail(&log)));
        }
        if answers(port, child.id()) {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "redis-server did not answer within 10 s: {}",
                tail(&log)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the server on `port` is ours (`process_id` in INFO) and serves commands (PING).
fn answers(port: u16, pid: u32) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
    if conn.write_all(b"PING\r\nINFO server\r\n").is_err() {
        return false;
    }
    let ours = format!("\r\nprocess_id:{pid}\r\n");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = conn.read(&mut buf) {
        reply.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&reply);
        if text.contains(&ours) {
            return text.starts_with("+PONG");
        }
    }
    false
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<_> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// A command to start, and where to send the started child.
type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The thread that starts every server: it lives until the process exits, and the kernel kills
/// the servers when it ends (a parent-death signal fires when the spawning *thread* exits,
/// so spawning from a test's own thread would kill the server with that test).
static SPAWNER: LazyLock<mpsc::Sender<SpawnRequest>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<SpawnRequest>();
    std::thread::Builder::new()
        .name("redis-spawner".into())
        .spawn(move || {
            for (mut cmd, reply) in rx {
                die_with_parent(&mut cmd);
                let _ = reply.send(cmd.spawn());
            }
        })
        .expect("the redis-spawner thread starts");
    tx
});

fn spawn(cmd: Command) -> std::io::Result<Child> {
    let (reply, child) = mpsc::channel();
    SPAWNER
        .send((cmd, reply))
        .expect("the redis-spawner thread runs");
    child.recv().expect("the redis-spawner thread answers")
}

#[cfg(target_os = "linux")]
fn die_with_parent(cmd: &mut Command) {
    use std::ffi::{c_int, c_ulong};
    use std::os::unix::process::CommandExt;

    unsafe extern "C" {
        fn prctl(option: c_int, ...) -> c_int;
    }
    const PR_SET_PDEATHSIG: c_int = 1;
    const SIGKILL: c_ulong = 9;
    // SAFETY: runs in the forked child before exec; prctl is async-signal-safe and changes only
    // the child's own parent-death signal.
    unsafe {
        cmd.pre_exec(|| {
            if prctl(PR_SET_PDEATHSIG, SIGKILL) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// Elsewhere a server outlives a test process that is killed; a normal exit still ends the
/// dedicated ones through `Drop`.
#[cfg(not(target_os = "linux"))]
fn die_with_parent(_cmd: &mut Command) {}

/// A Redis Cluster of three masters (no replicas) on free loopback ports, each node a
/// `redis-server` with `cluster-enabled yes` and its own directory, the slots assigned with
/// `redis-cli --cluster create`. Killed when dropped.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

static SHARED_CLUSTER: LazyLock<RedisCluster> = LazyLock::new(RedisCluster::start);

/// The cluster shared by the whole test run; tests keep apart by using their own account ids.
pub async fn shared_cluster_url() -> String {
    tokio::task::spawn_blocking(|| SHARED_CLUSTER.url())
        .await
        .unwrap()
}

impl RedisCluster {
    /// Starts the nodes, assigns the slots and waits until every node says `cluster_state:ok`
    /// and knows all three masters. Blocking: call it off the runtime's workers.
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::launch(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "5000",
                    // As production should run (docs/operations.md): with one master down the
                    // others keep serving their slots instead of refusing every command.
                    "--cluster-require-full-coverage",
                    "no",
                    "--appendfsync",
                    "always",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs (it comes with redis-server)");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        wait_ready(&nodes);
        Self { nodes }
    }

    /// SIGKILLs every node, as a crash of the whole cluster would.
    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Starts every node again on its port and directory (its `nodes.conf` and append-only
    /// file), and waits until the cluster is ready again. Blocking.
    pub fn restart_all(&mut self) {
        for node in &mut self.nodes {
            node.restart();
        }
        wait_ready(&self.nodes);
    }

    /// SIGKILLs one node (a master, there are no replicas): the slots it serves are unreachable.
    pub fn kill_node(&mut self, node: usize) {
        self.nodes[node].kill();
    }

    /// Starts that node again on its port and directory (its `nodes.conf` and append-only
    /// file); returns once it answers. Blocking.
    pub fn restart_node(&mut self, node: usize) {
        self.nodes[node].restart();
    }

    /// The index of the node whose slots hold `key`'s slot, from `CLUSTER NODES`.
    pub fn node_of_slot(&self, slot: u16) -> usize {
        let nodes = cli(self.nodes[0].port, &["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(port) = fields
                .get(1)
                .and_then(|a| a.split('@').next())
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
            else {
                continue;
            };
            let serves = fields.iter().skip(8).any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
            });
            if serves {
                return self
                    .nodes
                    .iter()
                    .position(|n| n.port == port)
                    .expect("CLUSTER NODES names a node of this cluster");
            }
        }
        panic!("no node serves slot {slot}: {nodes}");
    }

    /// `CLUSTER KEYSLOT key`, as the cluster itself computes it.
    pub fn keyslot(&self, key: &str) -> u16 {
        let out = cli(self.nodes[0].port, &["cluster", "keyslot", key]);
        out.trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number")
    }

    /// Every node, as the gateway's `store.redis_url` takes a cluster: comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Until every node says `cluster_state:ok` and knows all three masters.
fn wait_ready(nodes: &[RedisServer]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    for node in nodes {
        loop {
            let info = cli(node.port, &["cluster", "info"]);
            if info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ready: {info}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The hash slot of a key as Redis Cluster computes it: CRC16 (XMODEM) of the hash tag (the part
/// between the first `{` and the next `}`, when not empty) or of the whole key, modulo 16384.
/// From the Redis Cluster specification ("Keys distribution model" and its appendix A, whose
/// reference output for "123456789" is 0x31C3).
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = key.find('{').and_then(|open| {
        let close = key[open + 1..].find('}')? + open + 1;
        (close > open + 1).then(|| &bytes[open + 1..close])
    });
    crc16(tagged.unwrap_or(bytes)) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[test]
fn crc16_matches_the_reference_output_of_the_redis_cluster_specification() {
    assert_eq!(crc16(b"123456789"), 0x31C3);
    // Keys with one hash tag share its slot; an empty tag hashes the whole key.
    assert_eq!(key_slot("wgw:{acme}:outbox"), key_slot("acme"));
    assert_eq!(key_slot("a{}b"), crc16(b"a{}b") % 16384);
}
