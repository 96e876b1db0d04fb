//! `patchpull serve` as a child process, as an operator runs it: its own config file, stdout
//! and stderr in files, the listening address read from the line it prints, killed on drop.
//! A wrapper command (`faketime -f +4d`) can go in front of it, to run it under another clock;
//! faketime forks patchpull as its child, so the whole process group is killed.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `patchpull serve`.
pub struct ServeProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`, from its `patchpull listening on` line.
    pub url: String,
    stderr: PathBuf,
}

impl ServeProcess {
    /// Writes `toml` to `<dir>/patchpull.toml` and starts `[wrapper...] patchpull serve` on it
    /// in `dir`, with no `PATCHPULL_*` variable or `RUST_LOG` of the test's environment but
    /// those of `env`. Panics with its output when it does not print where it listens within
    /// 60 s.
    pub fn start(dir: &Path, toml: &str, wrapper: &[&str], env: &[(&str, &str)]) -> ServeProcess {
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("patchpull.toml");
        std::fs::write(&config, toml).unwrap();
        let stdout = dir.join("serve.stdout");
        let stderr = dir.join("serve.stderr");
        // A benchmark (benches/scaleout.sh) runs the tests' harness against a release build.
        let bin = std::env::var_os("BENCH_PATCHPULL_BIN")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_patchpull").into());
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(bin);
                cmd
            }
            None => Command::new(bin),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .env_remove("RUST_LOG")
            .process_group(0);
        for (key, _) in std::env::vars() {
            if key.starts_with("PATCHPULL_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().copied());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start patchpull serve: {e}"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = std::fs::read_to_string(&stdout).unwrap_or_default();
            if let Some(url) = out
                .lines()
                .find_map(|l| l.strip_prefix("patchpull listening on "))
            {
                return ServeProcess {
                    child,
                    url: url.trim().to_string(),
                    stderr,
                };
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                kill_group(&mut child);
                panic!(
                    "patchpull serve did not start ({exited:?}):\n{out}\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`
    pub fn authority(&self) -> &str {
        self.url.trim_start_matches("http://")
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

/// Kills the process group `child` leads (it was started in a group of its own), then reaps
/// `child`.
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill")
        .args(["-KILL", "--", &group])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

impl ServeProcess {
    /// The process id (of the wrapper, when there is one).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it as an operator does (SIGTERM), waiting at most `patience` for it to exit
    /// (polling its status); then whatever is left of its group is killed.
    pub fn terminate(mut self, patience: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + patience;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
