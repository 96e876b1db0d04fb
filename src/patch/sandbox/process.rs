//! Running the `unshare` chain as a child: environment cleared, output bounded, the
//! timeout enforced on the whole process group, and a root caller's id map written.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::run::{SandboxOutput, HOST_PATH, OUTPUT_LIMIT};
use super::ID_RANGE;

/// Spawns `command` with only `PATH` (for the host tools) in its environment, feeds it
/// `stdin`, and waits at most `timeout`, then kills its process group (the pid namespace
/// goes with it: `unshare --kill-child`). `map`: write `0 uid ID_RANGE` / `0 gid ID_RANGE`
/// as the id maps of the user namespace the child makes.
pub(super) fn supervise(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    map: Option<(u32, u32)>,
) -> io::Result<SandboxOutput> {
    command
        .env_clear()
        .env("PATH", HOST_PATH)
        .env("LC_ALL", "C")
        .current_dir("/")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn()?;
    let stdout = child.stdout.take().map(capture);
    let stderr = child.stderr.take().map(capture);
    let feeder = match (stdin, child.stdin.take()) {
        (Some(bytes), Some(mut pipe)) => {
            let bytes = bytes.to_vec();
            // A command that does not read its input closes the pipe: EPIPE, ignored.
            Some(thread::spawn(move || drop(pipe.write_all(&bytes))))
        }
        _ => None,
    };
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let mapped = match map {
        Some((uid, gid)) => write_map(&mut child, uid, gid, deadline),
        None => Ok(()),
    };
    let status = match mapped {
        Err(e) => {
            kill_group(&mut child);
            let _ = child.wait();
            Err(e)
        }
        Ok(()) => loop {
            if let Some(status) = child.try_wait()? {
                break Ok(status);
            }
            if Instant::now() >= deadline {
                timed_out = true;
                kill_group(&mut child);
                break child.wait();
            }
            thread::sleep(Duration::from_millis(5));
        },
    };
    let stdout = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    let status = status?;
    Ok(SandboxOutput {
        status: if timed_out { None } else { status.code() },
        stdout,
        stderr,
        timed_out,
    })
}

/// Reads a stream to its end, keeping the first [`OUTPUT_LIMIT`] bytes.
fn capture(mut stream: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        kept
    })
}

fn kill_group(child: &mut Child) {
    // `kill -- -PGID`: the group is the child's pid (process_group(0)).
    let _ = Command::new("kill")
        .env_clear()
        .env("PATH", HOST_PATH)
        .args(["-s", "KILL", "--", &format!("-{}", child.id())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
}

/// Waits until the child is in a new user namespace, then writes its id maps (a root
/// caller may map any range; `unshare` alone could not without `newuidmap`).
fn write_map(child: &mut Child, uid: u32, gid: u32, deadline: Instant) -> io::Result<()> {
    let pid = child.id();
    let own = fs::read_link("/proc/self/ns/user")?;
    let give_up = deadline.min(Instant::now() + Duration::from_secs(10));
    loop {
        if fs::read_link(format!("/proc/{pid}/ns/user")).is_ok_and(|ns| ns != own) {
            break;
        }
        if child.try_wait()?.is_some() {
            // It failed before making the namespace; its stderr says why.
            return Ok(());
        }
        if Instant::now() >= give_up {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the sandbox's user namespace did not appear",
            ));
        }
        thread::sleep(Duration::from_millis(1));
    }
    fs::write(
        format!("/proc/{pid}/uid_map"),
        format!("0 {uid} {ID_RANGE}\n"),
    )?;
    fs::write(
        format!("/proc/{pid}/gid_map"),
        format!("0 {gid} {ID_RANGE}\n"),
    )?;
    Ok(())
}
