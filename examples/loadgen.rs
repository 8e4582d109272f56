//! Load generator: plays WeChat against a running gateway (or the ceiling, `examples/ceiling.rs`)
//! given by URL, and reports requests/s, latency percentiles and non-200 answers.
//!
//! ```sh
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080 \
//!     --config config/example.toml --account demo-mp --concurrency 64 --duration 10
//! ```
//!
//! Before sending anything it pre-generates a pool of distinct callbacks for the account (or,
//! with `--all-accounts`, for every account of the file, round robin): distinct MsgIds, so none
//! is served from de-duplication, each signed with the account's Token and, in safe mode,
//! encrypted with its EncodingAESKey, exactly as WeChat sends them (query `signature`,
//! `timestamp`, `nonce`, `openid`, `encrypt_type=aes`, `msg_signature`; the `<Encrypt>`
//! envelope). Modes:
//! - `safe` (default): encrypted callbacks;
//! - `plain`: unencrypted callbacks with `signature` (the account must be in plain mode);
//! - `retries`: safe-mode callbacks, each sent 3 times, the copies one block of 1,024 callbacks
//!   apart (so a retry usually arrives after its original was committed, as WeChat's do).
//!
//! - `reply`: safe-mode text callbacks that contain `报价`, for a gateway with an auto-reply
//!   rule on that keyword (`scripts/bench` creates one): every answer should be an encrypted
//!   passive reply; a 200 without `<Encrypt>` is counted as `no_reply`.
//!
//! The client is a minimal HTTP/1.1 keep-alive client on one thread, one request in flight per
//! connection, writing pre-serialized requests, so that the generator costs the machine as
//! little as possible. Requests that complete during `--warmup` are not counted. The last line
//! on stdout is machine-readable (`key=value` pairs; `scripts/bench` reads it); the rest goes to
//! stderr. With `--server-pid` (repeatable), it also reports the CPU time those processes used
//! per request during the measurement, and the part of it spent in the kernel (from
//! `/proc/PID/stat`). `client_busy=` is the share of one core the generator itself used.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wechat_gateway::wechat::account::Account;

#[path = "common/callbacks.rs"]
mod callbacks;
use callbacks::{generate, Mode};

#[derive(Debug, Parser)]
#[command(
    about = "Drives a WeChat callback URL with pre-generated, correctly signed callbacks",
    args_override_self = true
)]
struct Args {
    /// Base URL of the server: `http://host:port` (callbacks go to `/wechat/{mp|work}/{account}`).
    #[arg(long)]
    url: String,
    /// The gateway's configuration file (for the accounts' Token and EncodingAESKey).
    #[arg(long)]
    config: std::path::PathBuf,
    /// Account id (default: the first account of the file).
    #[arg(long, conflicts_with = "all_accounts")]
    account: Option<String>,
    /// Spread the callbacks over every account of the file, round robin.
    #[arg(long)]
    all_accounts: bool,
    #[arg(long, value_enum, default_value_t = Mode::Safe)]
    mode: Mode,
    /// Connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds to measure (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Measure exactly this many requests instead of a duration.
    #[arg(long)]
    requests: Option<usize>,
    /// Seconds of load before measuring (connections, allocator, store files warm up).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Distinct callbacks to pre-generate. When the run needs more, the pool is reused (those
    /// requests are duplicates to the gateway) and `reused=` says how many.
    #[arg(long, default_value_t = 200_000)]
    pool: usize,
    /// Processes whose CPU time per request is reported (`cpu_us_per_req=`).
    #[arg(long)]
    server_pid: Vec<u32>,
}

/// Copies of each callback in `retries` mode, and how far apart they are sent.
const RETRY_COPIES: usize = 3;
const RETRY_BLOCK: usize = 1024;

/// Which pool entry the k-th request sends.
fn pick(mode: Mode, k: usize, pool: usize) -> usize {
    match mode {
        Mode::Safe | Mode::Plain | Mode::Reply => k % pool,
        Mode::Retries => {
            let block = k / (RETRY_BLOCK * RETRY_COPIES);
            let within = k % (RETRY_BLOCK * RETRY_COPIES) % RETRY_BLOCK;
            (block * RETRY_BLOCK + within) % pool
        }
    }
}

/// Requests the pool covers before it is reused.
fn distinct_capacity(mode: Mode, pool: usize) -> usize {
    match mode {
        Mode::Safe | Mode::Plain | Mode::Reply => pool,
        Mode::Retries => pool / RETRY_BLOCK * RETRY_BLOCK * RETRY_COPIES,
    }
}

/// One keep-alive connection and its read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one request and reads its response; returns the status code and whether the body
    /// is an encrypted reply (`<Encrypt>`).
    async fn round_trip(&mut self, req: &[u8]) -> io::Result<(u16, bool)> {
        self.stream.write_all(req).await?;
        self.buf.clear();
        loop {
            if let Some(head_end) = find(&self.buf, b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..head_end])
                    .map_err(|_| bad("response head is not UTF-8"))?;
                let status: u16 = head
                    .get(9..12)
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| bad("no status code"))?;
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .ok_or_else(|| bad("no Content-Length"))?;
                let total = head_end + 4 + len;
                while self.buf.len() < total {
                    self.fill().await?;
                }
                if self.buf.len() > total {
                    return Err(bad("bytes after the response (one request in flight)"));
                }
                let encrypted = find(&self.buf[head_end + 4..total], b"<Encrypt>").is_some();
                return Ok((status, encrypted));
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn bad(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// What one connection saw during the measurement.
#[derive(Default)]
struct Tally {
    /// Latencies in microseconds of the measured requests.
    latencies: Vec<u32>,
    non_200: usize,
    /// `reply` mode: 200s that were not an encrypted passive reply.
    no_reply: usize,
    /// Transport failures (counted in `non_200` too); the connection is reopened.
    errors: usize,
}

struct Shared {
    pool: Vec<Vec<u8>>,
    mode: Mode,
    next: AtomicUsize,
    /// Set when the measurement starts; requests started before it are not counted.
    measuring: AtomicBool,
    /// Requests measured so far (count mode stops at the target).
    measured: AtomicUsize,
    target: Option<usize>,
    stop: AtomicBool,
}

async fn connection(addr: String, shared: Arc<Shared>) -> anyhow::Result<Tally> {
    let mut tally = Tally {
        latencies: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    let mut conn = Conn::open(&addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    while !shared.stop.load(Ordering::Relaxed) {
        let counted = shared.measuring.load(Ordering::Relaxed);
        if counted {
            if let Some(target) = shared.target {
                if shared.measured.fetch_add(1, Ordering::Relaxed) >= target {
                    break;
                }
            }
        }
        let k = shared.next.fetch_add(1, Ordering::Relaxed);
        let req = &shared.pool[pick(shared.mode, k, shared.pool.len())];
        let started = Instant::now();
        let status = match conn.round_trip(req).await {
            Ok((status, encrypted)) => {
                if counted && shared.mode == Mode::Reply && status == 200 && !encrypted {
                    tally.no_reply += 1;
                }
                Some(status)
            }
            Err(_) => {
                conn = Conn::open(&addr)
                    .await
                    .with_context(|| format!("cannot reconnect to {addr}"))?;
                None
            }
        };
        if counted {
            let us = started.elapsed().as_micros();
            tally.latencies.push(u32::try_from(us).unwrap_or(u32::MAX));
            if status != Some(200) {
                tally.non_200 += 1;
            }
            if status.is_none() {
                tally.errors += 1;
            }
        }
    }
    Ok(tally)
}

/// User and system CPU time of a process so far, in clock ticks (100 a second on Linux).
fn cpu_ticks(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok((ticks(11), ticks(12)))
}

fn total_ticks(pids: &[u32]) -> anyhow::Result<(u64, u64)> {
    pids.iter().try_fold((0, 0), |(u, s), &p| {
        let (pu, ps) = cpu_ticks(p)?;
        Ok((u + pu, s + ps))
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = wechat_gateway::config::load(&args.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let accounts: Vec<&Account> = if args.all_accounts {
        cfg.accounts.iter().collect()
    } else {
        match &args.account {
            Some(id) => vec![cfg
                .accounts
                .iter()
                .find(|a| a.id.as_str() == id)
                .with_context(|| format!("no account {id:?} in {}", args.config.display()))?],
            None => vec![cfg
                .accounts
                .first()
                .context("the configuration has no account")?],
        }
    };
    let addr = args
        .url
        .strip_prefix("http://")
        .context("--url must start with http://")?
        .trim_end_matches('/')
        .to_owned();
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let pool_size = match args.requests {
        // Enough for the warm-up at a generous rate plus the measured requests.
        Some(n) => args.pool.max(n + args.concurrency),
        None => args.pool,
    }
    .max(RETRY_BLOCK);
    let generating = Instant::now();
    let pool = generate(&accounts, args.mode, &addr, pool_size)?;
    eprintln!(
        "loadgen: {} distinct {:?} callbacks for {} account(s) generated in {:.1} s",
        pool.len(),
        args.mode,
        accounts.len(),
        generating.elapsed().as_secs_f64()
    );
    let shared = Arc::new(Shared {
        pool,
        mode: args.mode,
        next: AtomicUsize::new(0),
        measuring: AtomicBool::new(false),
        measured: AtomicUsize::new(0),
        target: args.requests,
        stop: AtomicBool::new(false),
    });

    // One thread: the generator should need one core at most.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tasks: Vec<_> = (0..args.concurrency)
            .map(|_| tokio::spawn(connection(addr.clone(), shared.clone())))
            .collect();
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        let cpu_before = total_ticks(&args.server_pid)?;
        let own_before = cpu_ticks(std::process::id())?;
        let started = Instant::now();
        shared.measuring.store(true, Ordering::Relaxed);
        let first_measured = shared.next.load(Ordering::Relaxed);
        if args.requests.is_none() {
            tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
            shared.stop.store(true, Ordering::Relaxed);
        }
        let mut all = Tally::default();
        for t in tasks {
            let tally = t.await??;
            all.latencies.extend(tally.latencies);
            all.non_200 += tally.non_200;
            all.no_reply += tally.no_reply;
            all.errors += tally.errors;
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu_after = total_ticks(&args.server_pid)?;
        let own_after = cpu_ticks(std::process::id())?;
        if all.latencies.is_empty() {
            bail!("no request completed during the measurement");
        }
        all.latencies.sort_unstable();
        let n = all.latencies.len();
        let pct = |p: f64| {
            let us = all.latencies[((n as f64 * p) as usize).min(n - 1)];
            f64::from(us) / 1e3
        };
        let sent = shared.next.load(Ordering::Relaxed);
        let reused = sent.saturating_sub(distinct_capacity(args.mode, shared.pool.len()));
        let rps = n as f64 / elapsed;
        // Clock ticks are 10 ms.
        let per_req = |ticks: u64| format!("{:.1}", ticks as f64 * 1e4 / n as f64);
        let (cpu_us, sys_us) = if args.server_pid.is_empty() {
            ("-".to_owned(), "-".to_owned())
        } else {
            let user = cpu_after.0 - cpu_before.0;
            let sys = cpu_after.1 - cpu_before.1;
            (per_req(user + sys), per_req(sys))
        };
        // The share of one core this generator used: near 1, it was the limit.
        let own = (own_after.0 + own_after.1) - (own_before.0 + own_before.1);
        let client_busy = own as f64 / 100.0 / elapsed;
        eprintln!(
            "loadgen: {n} requests in {elapsed:.2} s ({} before the measurement) at concurrency {}: \
             {rps:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} non-200 ({} transport errors)",
            first_measured,
            args.concurrency,
            pct(0.5),
            pct(0.99),
            pct(0.999),
            all.non_200,
            all.errors
        );
        if reused > 0 {
            eprintln!(
                "loadgen: WARNING the pool ran out: {reused} requests reused callbacks \
                 (duplicates to the gateway); raise --pool"
            );
        }
        println!(
            "rps={rps:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} non200={} errors={} requests={n} \
             reused={reused} cpu_us_per_req={cpu_us} sys_us_per_req={sys_us} client_busy={client_busy:.2} \
             no_reply={}",
            pct(0.5),
            pct(0.99),
            pct(0.999),
            all.non_200,
            all.errors,
            all.no_reply
        );
        Ok(())
    })
}
