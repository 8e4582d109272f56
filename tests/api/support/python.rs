//! Google's protobuf library for Python, the standard parser of another language that the
//! proto3 JSON tests read the gateway's JSON back with: a venv under `target/` with `protobuf`
//! installed, made once per test run. Without python3 the tests say loudly that they skipped;
//! a venv or pip that fails is a failure, never a skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use prost::Message;
use wechat_gateway::pb;

/// The venv's python with `protobuf` importable, or `None` (after a loud message) when the
/// machine has no python3.
pub fn protobuf_python() -> Option<&'static Path> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if Command::new("python3").arg("--version").output().is_err() {
                eprintln!(
                    "\n!!!!!!!! SKIPPED: python3 is not installed, so the proto3 JSON of events \
                     was NOT checked against Google's protobuf parser. Install python3 (with \
                     venv) to run this check. !!!!!!!!\n"
                );
                return None;
            }
            let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("venv-protobuf");
            let python = venv.join("bin").join("python");
            if !python.exists() {
                run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
            }
            let has_protobuf = Command::new(&python)
                .args(["-c", "import google.protobuf"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !has_protobuf {
                run(Command::new(&python).args(["-m", "pip", "install", "-q", "protobuf"]));
            }
            Some(python)
        })
        .as_deref()
}

fn run(command: &mut Command) {
    let out = command.output().expect("the command starts");
    assert!(
        out.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Parses each proto3 JSON document with Python's `json_format.Parse` into
/// `wechat_gateway.v1.Event` (descriptors from the gateway's build), and decodes the binary
/// encoding Python writes back into the Rust message. `None` only when python3 is absent.
pub fn python_reads_events(jsons: &[String]) -> Option<Vec<pb::Event>> {
    let python = protobuf_python()?;
    let dir = tempfile::tempdir().unwrap();
    let descriptors = dir.path().join("descriptors.bin");
    std::fs::write(&descriptors, pb::FILE_DESCRIPTOR_SET).unwrap();
    let mut child = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/api/support/proto_json.py"
        ))
        .arg(&descriptors)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    let mut stdin = child.stdin.take().unwrap();
    for json in jsons {
        assert!(!json.contains('\n'), "one document per line: {json}");
        writeln!(stdin, "{json}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "Python's protobuf refused the JSON: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<pb::Event> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|hex| pb::Event::decode(&*hex::decode(hex).unwrap()).unwrap())
        .collect();
    assert_eq!(events.len(), jsons.len());
    Some(events)
}
