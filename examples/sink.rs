//! A CRM stand-in for the forwarding benchmark: a tonic `EventSink` on loopback that accepts
//! every event, and exits once it has received `--expect` distinct events, printing the rate.
//!
//! `cargo run --release --example sink -- --listen 127.0.0.1:50070 --expect 30000`
//!
//! The clock starts at the first `Deliver` call, so the time the gateway took to notice the sink
//! (connection back-off, a restart) is not counted; the events of that first call are left out
//! of the rate for the same reason. The last line on stdout is machine-readable (`key=value`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use wechat_gateway::pb::event_sink_server::{EventSink, EventSinkServer};
use wechat_gateway::pb::{DeliverRequest, DeliverResponse};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Distinct events to wait for.
    #[arg(long)]
    expect: usize,
    /// Give up (exit 1) after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

#[derive(Default)]
struct Progress {
    ids: HashSet<String>,
    calls: u64,
    events: u64,
    /// When the first call arrived, and how many distinct events it carried.
    first: Option<(Instant, usize)>,
    /// When the expected count was reached.
    done: Option<Instant>,
}

struct Sink {
    expect: usize,
    progress: Mutex<Progress>,
    reached: Notify,
}

#[tonic::async_trait]
impl EventSink for Sink {
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        let now = Instant::now();
        let events = request.into_inner().events;
        let mut p = self.progress.lock().unwrap();
        p.calls += 1;
        p.events += events.len() as u64;
        let before = p.ids.len();
        p.ids.extend(events.into_iter().map(|e| e.id));
        if p.first.is_none() {
            p.first = Some((now, p.ids.len() - before));
        }
        if p.ids.len() >= self.expect && p.done.is_none() {
            p.done = Some(now);
            self.reached.notify_one();
        }
        Ok(Response::new(DeliverResponse::default()))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sink = Arc::new(Sink {
        expect: args.expect,
        progress: Mutex::default(),
        reached: Notify::new(),
    });
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("sink: listening on {}", args.listen);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EventSinkServer::from_arc(sink.clone()))
            // As a CRM's server would (tonic's `serve` does; `serve_with_incoming` needs telling):
            // with Nagle on, every ~20th answer waited 40 ms for a delayed ACK.
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            ),
    );
    let reached =
        tokio::time::timeout(Duration::from_secs(args.timeout), sink.reached.notified()).await;
    let p = sink.progress.lock().unwrap();
    if reached.is_err() {
        anyhow::bail!(
            "sink: only {} of {} events after {} s",
            p.ids.len(),
            args.expect,
            args.timeout
        );
    }
    let (first_at, first_events) = p.first.expect("a call arrived");
    let seconds = p
        .done
        .expect("reached")
        .duration_since(first_at)
        .as_secs_f64();
    let counted = p.ids.len() - first_events;
    let eps = counted as f64 / seconds.max(1e-9);
    eprintln!(
        "sink: {} distinct events ({} with re-deliveries) in {} calls; {counted} in {seconds:.3} s \
         after the first call: {eps:.0} events/s",
        p.ids.len(),
        p.events,
        p.calls
    );
    println!(
        "eps={eps:.0} events={} delivered={} calls={} seconds={seconds:.3}",
        p.ids.len(),
        p.events,
        p.calls
    );
    Ok(())
}
