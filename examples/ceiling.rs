//! The ceiling of the benchmarks: a bare actix-web server that reads the body of every request and
//! answers `success`, as the gateway does, with nothing in between. It runs with actix's default
//! worker count, like the gateway (one per core it may run on, so `taskset` sets both alike).
//!
//! `cargo run --release --example ceiling -- --listen 127.0.0.1:8090`

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
}

/// Nothing is checked and nothing is added (not even a content type): the cheapest answer.
async fn success(_body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().body("success")
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    eprintln!("ceiling: listening on {}", args.listen);
    HttpServer::new(|| {
        App::new()
            .app_data(web::PayloadConfig::new(65_536))
            // No routing either: actix matches dynamic paths with a regex.
            .default_service(web::to(success))
    })
    .bind(args.listen)?
    .run()
    .await
}
