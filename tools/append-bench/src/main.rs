//! Issue 16: what the callback path's durable write costs on candidate embedded engines, side by
//! side, outside the gateway. Each candidate gets the same work: W writer threads, each handing
//! ~1 KB records (an encoded event with a 40-character de-duplication id, all of one CreateTime
//! second, as a burst is) to one committer thread and waiting for its answer; the committer takes
//! everything queued (group commit), checks each id against the de-duplication index, writes the
//! new marks and events, makes them durable, then answers. The figure is the process's CPU time
//! (user + system, every thread: the writers, the committer and the engine's own) per record.
//!
//! - `redb`: today's embedded store (tables as in src/store/embedded/schema.rs: marks keyed by
//!   (CreateTime, id), outbox by sequence number), one write transaction per group, durable.
//! - `fjall`: an LSM tree (two keyspaces: marks, outbox), one write batch per group, then the
//!   journal synced (`PersistMode::SyncData`).
//! - `log`: a hand-written segment log, one `write` of the group's frames and one `fdatasync`;
//!   the de-duplication index in memory (a hash set; on start it would be rebuilt from the log).
//!
//!   cargo run --release -- 8000 4 16 64      # records per run, then the writer counts
//!
//! Files go to $APPEND_BENCH_DIR (default: a new directory under the system's temp dir; it must
//! be a real disk for `fdatasync` to mean anything).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use rand::RngCore;
use redb::ReadableTable;
use sha1::{Digest, Sha1};

const RECORD_BYTES: usize = 1000;

struct Record {
    at: u64,
    id: String,
    event: Vec<u8>,
}

trait Engine: Send {
    /// Writes the new ones of `batch` durably; answers whether each was new.
    fn commit(&mut self, batch: &[Record]) -> Vec<bool>;
}

// --- redb ---

const SEEN: redb::TableDefinition<(u64, &str), u64> = redb::TableDefinition::new("seen_by_time");
const OUTBOX: redb::TableDefinition<u64, (u64, &[u8])> = redb::TableDefinition::new("outbox");

struct Redb {
    db: redb::Database,
    seq: u64,
}

impl Redb {
    fn open(dir: &Path) -> Self {
        let db = redb::Database::builder()
            .set_cache_size(32 << 20) // store.cache_mib's default
            .create(dir.join("redb"))
            .unwrap();
        Self { db, seq: 0 }
    }
}

impl Engine for Redb {
    fn commit(&mut self, batch: &[Record]) -> Vec<bool> {
        let txn = self.db.begin_write().unwrap();
        let mut answers = Vec::with_capacity(batch.len());
        {
            let mut seen = txn.open_table(SEEN).unwrap();
            let mut outbox = txn.open_table(OUTBOX).unwrap();
            for r in batch {
                if seen.get((r.at, r.id.as_str())).unwrap().is_some() {
                    answers.push(false);
                    continue;
                }
                seen.insert((r.at, r.id.as_str()), r.at + 86_400).unwrap();
                self.seq += 1;
                outbox
                    .insert(self.seq, (r.at * 1000, r.event.as_slice()))
                    .unwrap();
                answers.push(true);
            }
        }
        txn.commit().unwrap(); // Durability::Immediate, redb's default
        answers
    }
}

// --- fjall ---

struct Fjall {
    db: fjall::Database,
    marks: fjall::Keyspace,
    outbox: fjall::Keyspace,
    seq: u64,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir.join("fjall")).open().unwrap();
        let marks = db
            .keyspace("marks", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let outbox = db
            .keyspace("outbox", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        Self {
            db,
            marks,
            outbox,
            seq: 0,
        }
    }
}

fn mark_key(r: &Record) -> Vec<u8> {
    let mut key = r.at.to_be_bytes().to_vec();
    key.extend_from_slice(r.id.as_bytes());
    key
}

impl Engine for Fjall {
    fn commit(&mut self, batch: &[Record]) -> Vec<bool> {
        let mut write = self.db.batch();
        let mut in_batch = HashSet::new();
        let mut answers = Vec::with_capacity(batch.len());
        for r in batch {
            let key = mark_key(r);
            if self.marks.get(&key).unwrap().is_some() || !in_batch.insert(key.clone()) {
                answers.push(false);
                continue;
            }
            self.seq += 1;
            write.insert(&self.marks, key, (r.at + 86_400).to_be_bytes());
            write.insert(&self.outbox, self.seq.to_be_bytes(), &r.event);
            answers.push(true);
        }
        write.commit().unwrap();
        self.db.persist(fjall::PersistMode::SyncData).unwrap();
        answers
    }
}

// --- a segment log ---

/// Frames `[u32 length][u32 checksum][kind u8][at u64][id len u8][id][event]`, appended to a
/// preallocated segment so that `fdatasync` has no size change to write back; a new segment
/// every 64 MiB.
struct Log {
    dir: PathBuf,
    file: File,
    segment: u32,
    offset: u64,
    recent: HashSet<(u64, String)>,
    buf: Vec<u8>,
}

const SEGMENT_BYTES: u64 = 64 << 20;

impl Log {
    fn open(dir: &Path) -> Self {
        let dir = dir.join("log");
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            file: Self::segment(&dir, 0),
            dir,
            segment: 0,
            offset: 0,
            recent: HashSet::new(),
            buf: Vec::with_capacity(1 << 20),
        }
    }

    fn segment(dir: &Path, n: u32) -> File {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join(format!("{n:08}.seg")))
            .unwrap();
        // Preallocated and written once (zeros), so appends change no file size or extents.
        let zeros = vec![0u8; 1 << 20];
        let mut f = &file;
        for _ in 0..SEGMENT_BYTES / zeros.len() as u64 {
            f.write_all(&zeros).unwrap();
        }
        file.sync_all().unwrap();
        file
    }
}

impl Engine for Log {
    fn commit(&mut self, batch: &[Record]) -> Vec<bool> {
        self.buf.clear();
        let mut answers = Vec::with_capacity(batch.len());
        for r in batch {
            if !self.recent.insert((r.at, r.id.clone())) {
                answers.push(false);
                continue;
            }
            let body_len = 1 + 8 + 1 + r.id.len() + r.event.len();
            let start = self.buf.len();
            self.buf.extend_from_slice(&(body_len as u32).to_le_bytes());
            self.buf.extend_from_slice(&[0; 4]);
            self.buf.push(1);
            self.buf.extend_from_slice(&r.at.to_le_bytes());
            self.buf.push(r.id.len() as u8);
            self.buf.extend_from_slice(r.id.as_bytes());
            self.buf.extend_from_slice(&r.event);
            let sum = checksum(&self.buf[start + 8..]);
            self.buf[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
            answers.push(true);
        }
        if self.offset + self.buf.len() as u64 > SEGMENT_BYTES {
            self.segment += 1;
            self.file = Self::segment(&self.dir, self.segment);
            self.offset = 0;
        }
        self.file.write_all_at(&self.buf, self.offset).unwrap();
        self.offset += self.buf.len() as u64;
        self.file.sync_data().unwrap();
        answers
    }
}

/// FNV-1a, 32 bits: enough to find a torn frame at the end of a segment.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, &b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

// --- the harness ---

type Queue = Mutex<Vec<(Record, SyncSender<bool>)>>;

fn cpu_seconds() -> f64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(usage.ru_utime) + t(usage.ru_stime)
}

fn records(n: usize, writer: usize) -> Vec<Record> {
    let mut rng = rand::rng();
    (0..n)
        .map(|i| {
            let mut event = vec![0u8; RECORD_BYTES];
            rng.fill_bytes(&mut event[..RECORD_BYTES / 2]); // half compressible, as protobuf text is
            Record {
                at: 1_764_800_000,
                id: hex::encode(Sha1::digest(format!("{writer}/{i}"))),
                event,
            }
        })
        .collect()
}

struct Outcome {
    cpu_us: f64,
    rate: f64,
    commits: usize,
}

fn run(engine: Box<dyn Engine>, total: usize, writers: usize) -> Outcome {
    let per_writer = total / writers;
    let inputs: Vec<Vec<Record>> = (0..writers).map(|w| records(per_writer, w)).collect();
    let queue: Arc<(Queue, Condvar)> = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let committer = {
        let (queue, done) = (Arc::clone(&queue), Arc::clone(&done));
        let mut engine = engine;
        std::thread::spawn(move || {
            let mut commits = 0;
            loop {
                let taken = {
                    let mut q = queue.0.lock().unwrap();
                    while q.is_empty() {
                        if done.load(std::sync::atomic::Ordering::Acquire) {
                            return commits;
                        }
                        q = queue.1.wait(q).unwrap();
                    }
                    std::mem::take(&mut *q)
                };
                let (batch, answers): (Vec<Record>, Vec<SyncSender<bool>>) =
                    taken.into_iter().unzip();
                for (new, answer) in engine.commit(&batch).into_iter().zip(answers) {
                    answer.send(new).unwrap();
                }
                commits += 1;
            }
        })
    };
    let cpu = cpu_seconds();
    let started = Instant::now();
    let threads: Vec<_> = inputs
        .into_iter()
        .map(|mine| {
            let queue = Arc::clone(&queue);
            std::thread::spawn(move || {
                for record in mine {
                    let (tx, rx) = sync_channel(1);
                    queue.0.lock().unwrap().push((record, tx));
                    queue.1.notify_one();
                    assert!(rx.recv().unwrap(), "every record is new");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    done.store(true, std::sync::atomic::Ordering::Release);
    queue.1.notify_one();
    let commits = committer.join().unwrap();
    let n = (per_writer * writers) as f64;
    Outcome {
        cpu_us: cpu / n * 1e6,
        rate: n / elapsed,
        commits,
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: append-bench RECORDS WRITERS..."))
        .collect();
    let (total, writer_counts) = match args.split_first() {
        Some((&total, rest)) if !rest.is_empty() => (total, rest.to_vec()),
        _ => (8000, vec![4, 16, 64]),
    };
    let base = std::env::var_os("APPEND_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("append-bench-{}", std::process::id()));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{total} records of ~{RECORD_BYTES} B per run, files under {}; load average {}",
        base.display(),
        load.split(' ').take(3).collect::<Vec<_>>().join(" ")
    );
    println!("| engine | writers | CPU per record | records/s | records per commit |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for name in ["redb", "fjall", "log"] {
        for &writers in &writer_counts {
            let dir = base.join(format!("{name}-{writers}"));
            std::fs::create_dir_all(&dir).unwrap();
            let engine: Box<dyn Engine> = match name {
                "redb" => Box::new(Redb::open(&dir)),
                "fjall" => Box::new(Fjall::open(&dir)),
                _ => Box::new(Log::open(&dir)),
            };
            let o = run(engine, total, writers);
            println!(
                "| {name} | {writers} | {:.1} µs | {:.0} | {:.1} |",
                o.cpu_us,
                o.rate,
                total as f64 / o.commits.max(1) as f64
            );
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    std::fs::remove_dir_all(&base).ok();
}
