//! The `patchpull` binary: `config check` and `serve`, as an operator runs them.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_patchpull");
const SECRET: &str = "pp-very-secret-password-31337";

/// A temp dir with `patchpull.toml` holding `toml`.
fn config_file(toml: &str) -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("pp-cli-")
        .tempdir()
        .unwrap();
    let path = dir.path().join("patchpull.toml");
    std::fs::write(&path, toml).unwrap();
    (dir, path)
}

/// `patchpull ARGS` in `dir` with no `PATCHPULL_*` variables except `env`.
fn patchpull(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("PATCHPULL_") || key == "RUST_LOG" {
            cmd.env_remove(key);
        }
    }
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd
}

/// Runs `cmd` to completion, killing it (and failing) if it takes longer than 20 s.
fn bounded_output(mut cmd: Command) -> Output {
    let out_dir = TempDir::new().unwrap();
    let stdout_path = out_dir.path().join("stdout");
    let stderr_path = out_dir.path().join("stderr");
    let mut child = cmd
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("run patchpull");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "patchpull still running after 20 s; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: std::fs::read(&stdout_path).unwrap(),
        stderr: std::fs::read(&stderr_path).unwrap(),
    }
}

fn config_check(path: &Path, env: &[(&str, &str)]) -> Output {
    let dir = path.parent().unwrap();
    let file = path.display().to_string();
    bounded_output(patchpull(dir, &["config", "check", "--config", &file], env))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:6001"

[storage]
path = "./store"

[[upstream]]
name = "docker.io"
url = "http://127.0.0.1:9"
default = true
username = "robot"
password = "pp-very-secret-password-31337"
"#;

#[test]
fn config_check_prints_the_effective_config_without_secrets() {
    let (_dir, path) = config_file(GOOD);
    let out = config_check(&path, &[]);
    let all = text(&out);
    assert!(out.status.success(), "config check failed:\n{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("127.0.0.1:6001"),
        "listen missing:\n{stdout}"
    );
    assert!(stdout.contains("robot"), "username missing:\n{stdout}");
    assert!(
        stdout.contains("password"),
        "password key missing:\n{stdout}"
    );
    // Defaults the file did not set are shown too.
    assert!(stdout.contains("tag_ttl"), "defaults missing:\n{stdout}");
    assert!(!all.contains(SECRET), "the password was printed:\n{all}");
}

#[test]
fn an_unknown_key_is_an_error_naming_key_and_file() {
    let (_dir, path) =
        config_file("[server]\nlisten = \"127.0.0.1:6001\"\nlisten_adress = \"x\"\n");
    let out = config_check(&path, &[]);
    let all = text(&out);
    assert!(!out.status.success(), "unknown key accepted:\n{all}");
    assert!(all.contains("listen_adress"), "key not named:\n{all}");
    assert!(all.contains("patchpull.toml"), "file not named:\n{all}");

    let (_dir, path) =
        config_file("[[upstream]]\nname = \"a\"\nurl = \"http://127.0.0.1:9\"\npasword = \"x\"\n");
    let out = config_check(&path, &[]);
    let all = text(&out);
    assert!(
        !out.status.success(),
        "unknown upstream key accepted:\n{all}"
    );
    assert!(all.contains("pasword"), "key not named:\n{all}");
}

#[test]
fn a_bad_value_names_its_key() {
    for (toml, key) in [
        ("[server]\nlisten = 5\n", "listen"),
        ("[server]\nlisten = \"not an address\"\n", "listen"),
        ("[cache]\ntag_ttl = \"soon\"\n", "tag_ttl"),
        ("[storage]\nmax_size = \"lots\"\n", "max_size"),
    ] {
        let (_dir, path) = config_file(toml);
        let out = config_check(&path, &[]);
        let all = text(&out);
        assert!(!out.status.success(), "accepted {toml:?}:\n{all}");
        assert!(all.contains(key), "{toml:?}: {key} not named:\n{all}");
        assert!(!all.contains("panicked"), "{toml:?}: panic:\n{all}");
    }
}

/// A file with seven mistakes of four kinds: all seven reported at once, each with the
/// file, its line and its key, in figment's words never (no `default.` profile prefix, no
/// Rust type names); exit 78.
#[test]
fn config_check_reports_every_problem_at_once_with_file_line_and_key() {
    let (_dir, path) = config_file(concat!(
        "[server]\n",                     // 1
        "listen = \"127.0.0.1:6001\"\n",  // 2
        "listen_adress = \"x\"\n",        // 3 unknown key
        "[patch]\n",                      // 4
        "workers = \"many\"\n",           // 5 wrong type
        "mode = \"sometimes\"\n",         // 6 bad value
        "[cache]\n",                      // 7
        "tag_ttl = true\n",               // 8 wrong type (duration)
        "[[upstream]]\n",                 // 9
        "name = \"a\"\n",                 // 10
        "url = \"http://127.0.0.1:9\"\n", // 11
        "default = true\n",               // 12
        "retries = \"x\"\n",              // 13 wrong type in an array element
        "[[upstream]]\n",                 // 14 missing url
        "name = \"b\"\n",                 // 15
        "[[upstream]]\n",                 // 16
        "name = \"c\"\n",                 // 17
        "url = \"ftp://x\"\n",            // 18 bad value after a removed element
    ));
    let out = config_check(&path, &[("PATCHPULL_PATCH__QUEUE", "abc")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(78), "{all}");
    for (line, key) in [
        (3, "`server.listen_adress`"),
        (5, "`patch.workers`"),
        (6, "`patch.mode`"),
        (8, "`cache.tag_ttl`"),
        (13, "`upstream[0].retries`"),
        (14, "`upstream[1]`"),
        (18, "`upstream[2].url`"),
    ] {
        let wanted = format!("patchpull.toml:{line}: {key}");
        assert!(all.contains(&wanted), "{wanted} missing:\n{all}");
    }
    assert!(
        all.contains("PATCHPULL_PATCH__QUEUE: `patch.queue`"),
        "the environment's problem missing:\n{all}"
    );
    assert!(all.contains("(8 problems)"), "{all}");
    for internal in [
        "default.",
        "usize",
        "TextOrNumber",
        "untagged",
        "TOML source string",
    ] {
        assert!(
            !all.contains(internal),
            "internal name {internal:?} shown:\n{all}"
        );
    }
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let dir = TempDir::new().unwrap();
    let out = bounded_output(patchpull(
        dir.path(),
        &["config", "check", "--config", "nope.toml"],
        &[],
    ));
    let all = text(&out);
    assert!(!out.status.success(), "missing file accepted:\n{all}");
    assert!(all.contains("nope.toml"), "file not named:\n{all}");
}

#[test]
fn the_environment_overrides_the_file() {
    let (_dir, path) = config_file(GOOD);
    let out = config_check(&path, &[("PATCHPULL_SERVER__LISTEN", "127.0.0.1:6002")]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout.contains("127.0.0.1:6002"),
        "env not applied:\n{stdout}"
    );
    assert!(
        !stdout.contains("127.0.0.1:6001"),
        "file value kept:\n{stdout}"
    );

    let out = config_check(&path, &[("PATCHPULL_SERVER__LISTEN", "nonsense")]);
    let all = text(&out);
    assert!(!out.status.success(), "bad env value accepted:\n{all}");
    assert!(all.contains("listen"), "key not named:\n{all}");
}

/// The tests' variable for the maintainer scripts' environment is read by the native engine,
/// not by the configuration: with it set, patchpull still starts (the corpus sets it to fake
/// the scripts' clock).
#[test]
fn the_scripts_extra_env_variable_is_no_configuration_key() {
    let (_dir, path) = config_file(GOOD);
    let out = config_check(&path, &[("PATCHPULL_SCRIPTS_EXTRA_ENV", "FAKETIME=+40d")]);
    assert!(out.status.success(), "{}", text(&out));
}

/// A `serve` child, killed on drop if the test did not stop it.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_serve(dir: &Path, config: &Path) -> Serve {
    let file = config.display().to_string();
    let mut child = patchpull(dir, &["serve", "--config", &file], &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start patchpull serve");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Serve { child, lines }
}

/// Waits for `patchpull listening on http://ADDR` and returns `http://ADDR`.
fn listening_url(serve: &Serve) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match serve.lines.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                if let Some(url) = line.strip_prefix("patchpull listening on ") {
                    return url.trim().to_string();
                }
                seen.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    panic!("no listening line on stdout; saw: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_and_exits_cleanly_on_sigterm() {
    let toml = GOOD.replace("127.0.0.1:6001", "127.0.0.1:0");
    let (dir, path) = config_file(&toml);
    let mut serve = start_serve(dir.path(), &path);
    let url = listening_url(&serve);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(!url.ends_with(":0"), "the real port was not printed: {url}");

    let resp = reqwest::get(format!("{url}/v2/")).await.expect("GET /v2/");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    let pid = serve.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success(), "kill -TERM {pid}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = serve.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
    assert!(
        reqwest::get(format!("{url}/v2/")).await.is_err(),
        "still answering after exit"
    );
}

#[test]
fn serve_refuses_a_bad_config_without_starting() {
    let (dir, path) = config_file("[server]\nlisten = 5\n");
    let out = bounded_output(patchpull(
        dir.path(),
        &["serve", "--config", &path.display().to_string()],
        &[],
    ));
    let all = text(&out);
    assert!(
        !out.status.success(),
        "serve started with a bad config:\n{all}"
    );
    assert!(all.contains("listen"), "key not named:\n{all}");
}
