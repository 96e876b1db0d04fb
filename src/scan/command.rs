//! A configured scanner command (for example `trivy image --format json --input {oci_dir}`):
//! run with a timeout, killed if it overruns or if the caller goes away, and its standard
//! output read as a Trivy (or copa) report. Placeholders in the arguments: `{image}` (the
//! reference), `{oci_dir}` (the image exported as an OCI layout), `{platform}`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::report::{self, ReportError, ScanReport, MAX_REPORT_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("no scanner command is configured")]
    NotConfigured,
    #[error("cannot start the scanner {program:?}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("the scanner {program:?} did not finish within {}s and was killed", timeout.as_secs())]
    TimedOut { program: String, timeout: Duration },
    #[error("the scanner {program:?} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
    #[error("the scanner {program:?} wrote more than {MAX_REPORT_BYTES} bytes")]
    TooLarge { program: String },
    #[error("the scanner {program:?} printed no usable report: {source}")]
    Report {
        program: String,
        source: ReportError,
    },
    #[error("reading the scanner's output: {0}")]
    Io(#[from] std::io::Error),
}

/// What the placeholders stand for in one run.
pub struct CommandInput<'a> {
    pub image: &'a str,
    pub oci_dir: &'a Path,
    pub platform: &'a str,
}

/// The scanner command from config: argv and timeout.
#[derive(Debug, Clone)]
pub struct ScannerCommand {
    argv: Vec<String>,
    timeout: Duration,
}

/// The tail of the scanner's stderr that goes into an error message.
const STDERR_TAIL: usize = 2048;

impl ScannerCommand {
    pub fn new(argv: Vec<String>, timeout: Duration) -> Result<ScannerCommand, CommandError> {
        if argv.is_empty() {
            return Err(CommandError::NotConfigured);
        }
        Ok(ScannerCommand { argv, timeout })
    }

    /// The command line as configured, for plan sources and messages.
    pub fn display(&self) -> String {
        self.argv.join(" ")
    }

    /// Whether the command needs the image exported as an OCI layout.
    pub fn wants_oci_dir(&self) -> bool {
        self.argv.iter().any(|a| a.contains("{oci_dir}"))
    }

    fn substitute(&self, input: &CommandInput<'_>) -> Vec<String> {
        let oci_dir = input.oci_dir.display().to_string();
        self.argv
            .iter()
            .map(|a| {
                a.replace("{image}", input.image)
                    .replace("{oci_dir}", &oci_dir)
                    .replace("{platform}", input.platform)
            })
            .collect()
    }

    /// Runs the scanner and reads its report.
    pub async fn run(&self, input: &CommandInput<'_>) -> Result<ScanReport, CommandError> {
        let argv = self.substitute(input);
        let program = argv[0].clone();
        let mut child = tokio::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| CommandError::Spawn {
                program: program.clone(),
                source,
            })?;
        let mut stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout"))?;
        let mut stderr = child
            .stderr
            .take()
            .ok_or_else(|| std::io::Error::other("no stderr"))?;
        let work = async {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let limit = MAX_REPORT_BYTES as u64 + 1;
            let mut limited_out = (&mut stdout).take(limit);
            let mut limited_err = (&mut stderr).take(1024 * 1024);
            let (o, e) = tokio::join!(
                limited_out.read_to_end(&mut out),
                limited_err.read_to_end(&mut err)
            );
            o?;
            e?;
            let status = child.wait().await?;
            Ok::<_, std::io::Error>((status, out, err))
        };
        let (status, out, err) = match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result?,
            // Dropping the future drops the child, which kill_on_drop kills.
            Err(_) => {
                return Err(CommandError::TimedOut {
                    program,
                    timeout: self.timeout,
                })
            }
        };
        if out.len() > MAX_REPORT_BYTES {
            return Err(CommandError::TooLarge { program });
        }
        if !status.success() {
            let text = String::from_utf8_lossy(&err);
            let tail: String = text
                .chars()
                .rev()
                .take(STDERR_TAIL)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(CommandError::Failed {
                program,
                status: status.to_string(),
                stderr: tail.trim().to_string(),
            });
        }
        report::parse(&out).map_err(|source| CommandError::Report { program, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> CommandInput<'static> {
        CommandInput {
            image: "reg/x:1",
            oci_dir: Path::new("/tmp/oci"),
            platform: "linux/amd64",
        }
    }

    fn sh(script: &str, timeout: Duration) -> ScannerCommand {
        ScannerCommand::new(vec!["sh".into(), "-c".into(), script.into()], timeout).unwrap()
    }

    #[tokio::test]
    async fn reads_the_report_from_stdout_with_placeholders_filled() {
        let report =
            r#"{"SchemaVersion":2,"Metadata":{"OS":{"Family":"debian","Name":"12"}},"Results":[]}"#;
        let cmd = sh(&format!("test '{{image}} {{oci_dir}} {{platform}}' = 'reg/x:1 /tmp/oci linux/amd64' && echo '{report}'"), Duration::from_secs(10));
        let parsed = cmd.run(&input()).await.unwrap();
        assert_eq!(parsed.os.unwrap().family, "debian");
    }

    #[tokio::test]
    async fn failures_say_what_went_wrong() {
        let e = sh("echo boom >&2; exit 3", Duration::from_secs(10))
            .run(&input())
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("boom") && e.to_string().contains('3'),
            "{e}"
        );
        let e = sh("sleep 5", Duration::from_millis(200))
            .run(&input())
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::TimedOut { .. }), "{e}");
        let e = sh("echo not json", Duration::from_secs(10))
            .run(&input())
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::Report { .. }), "{e}");
        let e = ScannerCommand::new(vec!["/nonexistent/scanner".into()], Duration::from_secs(1))
            .unwrap()
            .run(&input())
            .await
            .unwrap_err();
        assert!(matches!(e, CommandError::Spawn { .. }), "{e}");
        assert!(ScannerCommand::new(vec![], Duration::from_secs(1)).is_err());
    }
}
