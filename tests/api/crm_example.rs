//! examples/crm: the Python EventSink that CRM developers copy works with the gateway. The test
//! builds its venv under target/ (pip installs grpcio and grpcio-tools), starts `sink.py`, starts
//! the sandbox with `crm.endpoint` pointing at it, sends a `simulate` callback, and waits for the
//! sink to print that event. Without python3 it says so loudly and passes.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::sandbox::{free_port, root, SandboxProcess};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn wait_for(path: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the Python sink did not print {needle:?}; it printed:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_python_example_sink_prints_the_event_of_a_simulated_callback() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!(
            "\n!!!!! SKIPPED: python3 is not installed, so examples/crm/sink.py was NOT tested !!!!!\n"
        );
        return;
    }
    let venv = root().join("target").join("crm-example-venv");
    if !venv.join("bin").join("python").exists() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
    }
    run(Command::new(venv.join("bin").join("pip"))
        .args(["install", "-q", "-r"])
        .arg(root().join("examples/crm/requirements.txt")));

    let out_dir = tempfile::tempdir().unwrap();
    let log = out_dir.path().join("sink.log");
    let port = free_port();
    let file = std::fs::File::create(&log).unwrap();
    let sink = Killed(
        Command::new(venv.join("bin").join("python"))
            .arg(root().join("examples/crm/sink.py"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--gen")
            .arg(out_dir.path().join("gen"))
            .stderr(Stdio::from(file.try_clone().unwrap()))
            .stdout(Stdio::from(file))
            .spawn()
            .unwrap(),
    );
    wait_for(&log, "EventSink listening").await;

    let sandbox =
        SandboxProcess::start(&[("WGW_CRM__ENDPOINT", format!("http://127.0.0.1:{port}"))]).await;
    let content = format!("hello from the crm example test {}", rand::random::<u32>());
    let out = Command::new(env!("CARGO_BIN_EXE_wechat-gateway"))
        .args([
            "simulate",
            "--config",
            "config/example.toml",
            "--content",
            &content,
        ])
        .current_dir(root())
        .env("WGW_HTTP__LISTEN", sandbox.http.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let printed = wait_for(&log, &content).await;
    let line = printed.lines().find(|l| l.contains(&content)).unwrap();
    assert!(
        line.starts_with("event text account=demo-mp user=oSimulatedFollower000000000 id="),
        "{line}"
    );
    drop(sink);
}
