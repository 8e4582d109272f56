//! Every shell example of README.md and docs/**/*.md runs, as written, against a sandbox.
//!
//! Each ```sh block is run verbatim by `bash -e -o pipefail` from the repository root, in file
//! order (README.md, then docs/ sorted), against one `wechat-gateway sandbox` on the example
//! configuration. The sandbox listens on free ports; the examples reach it through what they
//! read from the environment (`GATEWAY`, `GRPC`, `ADMIN_TOKEN`, and `WGW_HTTP__LISTEN` for
//! `simulate`, which the configuration loader reads like the gateway does), so no text is
//! rewritten. Two shims on PATH: `cargo`, which runs `cargo run -- ARGS` as the built binary
//! with ARGS, and `curl`, which adds `--fail-with-body` so that an HTTP error fails the example
//! (an example that printed a 4xx would otherwise pass).
//!
//! Markers, in the fence's info string: `sh no-run` (never run: long-running or installing;
//! listed in [`NOT_RUN`], so that the list stays short and deliberate), `sh needs=TOOL` (run
//! when TOOL is installed, otherwise reported as skipped). A ```text expected block right after
//! a ```sh block holds lines its output must contain, `...` standing for anything.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::sandbox::{root, SandboxProcess, EXAMPLE_ADMIN_TOKEN};

/// The blocks that never run, by file and first command.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "README.md",
        "cargo run -- sandbox --config config/example.toml",
    ),
    ("README.md", "cargo run -- --config config/example.toml"),
    ("README.md", "cargo test --locked"),
    (
        "docs/admin/dead-letters.md",
        "curl -s -X POST -H \"Authorization: Bearer $ADMIN_TOKEN\" \\",
    ),
    (
        "docs/sandbox.md",
        "cargo run -- sandbox --config config/example.toml",
    ),
];

#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    attrs: Vec<String>,
    script: String,
    expected: Vec<String>,
}

impl Block {
    fn first_command(&self) -> &str {
        self.script
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .unwrap_or("")
    }

    fn needs(&self) -> Option<&str> {
        self.attrs.iter().find_map(|a| a.strip_prefix("needs="))
    }
}

/// The ```sh blocks of one markdown file, each with the ```text expected block after it.
fn blocks(file: &str, text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Block> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(info) = lines[i].trim_start().strip_prefix("```") else {
            i += 1;
            continue;
        };
        let start = i;
        let body: Vec<&str> = lines[i + 1..]
            .iter()
            .take_while(|l| l.trim() != "```")
            .copied()
            .collect();
        i += body.len() + 2;
        let mut words = info.split_whitespace();
        match words.next() {
            Some("sh") => out.push(Block {
                file: file.to_owned(),
                line: start + 1,
                attrs: words.map(str::to_owned).collect(),
                script: body.join("\n") + "\n",
                expected: Vec::new(),
            }),
            Some("text") if words.next() == Some("expected") => {
                let after_sh = lines[..start]
                    .iter()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .is_some_and(|l| l.trim() == "```");
                match out.last_mut() {
                    Some(prev) if after_sh => {
                        prev.expected = body.iter().map(|l| l.to_string()).collect()
                    }
                    _ => panic!(
                        "{file}:{}: a ```text expected block must follow a ```sh block",
                        start + 1
                    ),
                }
            }
            _ => {}
        }
    }
    out
}

fn markdown_files() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut docs = Vec::new();
    walk(&root().join("docs"), &mut docs);
    docs.sort();
    std::iter::once("README.md".to_owned())
        .chain(docs.iter().map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        }))
        .collect()
}

fn on_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn write_shim(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Whether `output` has every expected line, `...` matching anything.
fn missing_lines(expected: &[String], output: &str) -> Vec<String> {
    expected
        .iter()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let pattern = l
                .trim()
                .split("...")
                .map(regex::escape)
                .collect::<Vec<_>>()
                .join(".*?");
            !regex::Regex::new(&pattern).unwrap().is_match(output)
        })
        .cloned()
        .collect()
}

#[test]
fn markers_and_expected_output_are_read_from_the_fences() {
    let md = "x\n```sh no-run\nserve\n```\n```sh\n# c\necho hi\n```\n\n```text expected\nh...\n```\n```proto\nmessage A {}\n```\n";
    let b = blocks("f.md", md);
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].attrs, ["no-run"]);
    assert_eq!(b[1].first_command(), "echo hi");
    assert_eq!(b[1].expected, ["h..."]);
    assert!(missing_lines(&b[1].expected, "say hi").is_empty());
    assert_eq!(missing_lines(&b[1].expected, "bye"), ["h..."]);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_shell_example_of_the_docs_runs_against_the_sandbox() {
    let sandbox = SandboxProcess::start(&[]).await;
    let shims = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_wechat-gateway");
    write_shim(
        shims.path(),
        "cargo",
        &format!(
            "if [ \"$1\" = run ] && [ \"$2\" = -- ]; then shift 2; exec '{bin}' \"$@\"; fi\n\
             echo \"cargo shim: only 'cargo run -- ...' is run here\" >&2; exit 2"
        ),
    );
    let curl = on_path("curl").expect("curl is installed");
    write_shim(
        shims.path(),
        "curl",
        &format!("exec '{}' --fail-with-body \"$@\"", curl.display()),
    );
    let path = std::env::join_paths(
        std::iter::once(shims.path().to_owned())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();

    let mut ran = Vec::new();
    let mut skipped = Vec::new();
    let mut not_run = Vec::new();
    let mut failures = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(root().join(&file)).unwrap();
        for block in blocks(&file, &text) {
            let at = format!("{}:{}", block.file, block.line);
            if block.attrs.iter().any(|a| a == "no-run") {
                not_run.push((block.file.clone(), block.first_command().to_owned()));
                continue;
            }
            if let Some(tool) = block.needs() {
                if on_path(tool).is_none() {
                    skipped.push(format!("{at} (needs {tool}, not installed)"));
                    continue;
                }
            }
            let script = shims.path().join("example.sh");
            std::fs::write(&script, &block.script).unwrap();
            let run = tokio::process::Command::new("bash")
                .args(["-e", "-o", "pipefail"])
                .arg(&script)
                .current_dir(root())
                .env("PATH", &path)
                .env("GATEWAY", sandbox.base())
                .env("GRPC", sandbox.grpc.to_string())
                .env("ADMIN_TOKEN", EXAMPLE_ADMIN_TOKEN)
                .env("WGW_HTTP__LISTEN", sandbox.http.to_string())
                .env("WGW_GRPC__LISTEN", sandbox.grpc.to_string())
                .env_remove("WECHAT_GATEWAY_CONFIG")
                .kill_on_drop(true)
                .output();
            let out = match tokio::time::timeout(Duration::from_secs(120), run).await {
                Ok(out) => out.unwrap(),
                Err(_) => {
                    failures.push(format!("{at}: did not finish within 120 s"));
                    continue;
                }
            };
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() {
                failures.push(format!(
                    "{at}: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
                    out.status
                ));
                continue;
            }
            let missing = missing_lines(&block.expected, &stdout);
            if !missing.is_empty() {
                failures.push(format!(
                    "{at}: the output lacks {missing:?}\n--- stdout\n{stdout}"
                ));
                continue;
            }
            ran.push(at);
        }
    }
    println!("ran {} shell examples: {ran:?}", ran.len());
    println!("not run (marked no-run): {not_run:?}");
    println!("skipped: {skipped:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    let listed: Vec<(String, String)> = NOT_RUN
        .iter()
        .map(|(f, c)| (f.to_string(), c.to_string()))
        .collect();
    assert_eq!(
        not_run, listed,
        "the no-run blocks are not the ones this test lists"
    );
    assert!(ran.len() >= 10, "only {} examples ran", ran.len());
    // The README's quick start: the subscribe of its QR code reached the sandbox's stdout as an
    // event that carries the code's label.
    sandbox
        .wait_for_line(&["spring-expo", "Spring Expo 2026", "demo-mp"])
        .await;
}
