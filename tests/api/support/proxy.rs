//! A TCP proxy on a free loopback port in front of a real server (Redis), that can hold what
//! clients send: while held, bytes from clients are read but not forwarded until released, so
//! every request through it stays in flight. A slow dependency made of real parts, for tests
//! that need callbacks to pile up without mocking the gateway's own code.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What each connection (by number) sent while held.
type HeldLog = Arc<Mutex<Vec<(usize, Vec<u8>)>>>;

pub struct HoldingProxy {
    addr: SocketAddr,
    held: watch::Sender<bool>,
    /// What each connection sent while held, since the last [`HoldingProxy::hold`].
    held_bytes: HeldLog,
    accept: tokio::task::JoinHandle<()>,
}

impl HoldingProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (held, _) = watch::channel(false);
        let gate = held.clone();
        let held_bytes = Arc::new(Mutex::new(Vec::new()));
        let log = held_bytes.clone();
        let accept = tokio::spawn(async move {
            let mut connections = 0usize;
            while let Ok((client, _)) = listener.accept().await {
                connections += 1;
                let connection = connections;
                let gate = gate.subscribe();
                let log = log.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        pipe(client, server, gate, log, connection).await;
                    }
                });
            }
        });
        Self {
            addr,
            held,
            held_bytes,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Holds (true) or releases (false) everything clients send from now on.
    pub fn hold(&self, on: bool) {
        self.held_bytes.lock().unwrap().clear();
        self.held.send_replace(on);
    }

    /// How many times `pattern` occurs in what one connection sent while held (e.g. the
    /// commands of one kind now in flight), summed over connections.
    pub fn held_count(&self, pattern: &[u8]) -> usize {
        self.held_bytes
            .lock()
            .unwrap()
            .iter()
            .map(|(_, sent)| {
                sent.windows(pattern.len())
                    .filter(|w| *w == pattern)
                    .count()
            })
            .sum()
    }
}

impl Drop for HoldingProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Client → server through the gate; server → client as it comes. Ends when either side closes.
async fn pipe(
    client: TcpStream,
    server: TcpStream,
    gate: watch::Receiver<bool>,
    log: HeldLog,
    connection: usize,
) {
    let mut write_gate = gate.clone();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    // Reading goes on while held (so everything sent is seen); writing waits for the gate.
    let (chunks, mut to_write) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if *gate.borrow() {
                // One entry per connection and hold, so a pattern split over reads still counts.
                let mut log = log.lock().unwrap();
                match log.iter_mut().find(|(c, _)| *c == connection) {
                    Some((_, sent)) => sent.extend_from_slice(&buf[..n]),
                    None => log.push((connection, buf[..n].to_vec())),
                }
            }
            if chunks.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some(chunk) = to_write.recv().await {
            if write_gate.wait_for(|held| !held).await.is_err() {
                return;
            }
            if server_write.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let upstream = async move {
        // The writer finishes what was read before the client closed.
        tokio::join!(read, write);
    };
    let downstream = async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    };
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
