//! BuildKit's Status stream as simple events: a vertex event whenever a step's state
//! changes, and the exec output split into whole lines.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::buildkit::proto::control::{StatusResponse, Vertex};

/// Output lines kept per step for the error of a failed build.
const LOG_TAIL: usize = 12;
/// Longer lines are cut: one progress bar or binary dump must not flood the log.
const MAX_LINE: usize = 2000;

/// One piece of build progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatusEvent {
    /// A step started, finished, was taken from the cache or failed. `name` is BuildKit's
    /// description of the step, e.g. `/bin/sh -c apt-get ...`.
    Vertex {
        digest: String,
        name: String,
        started: bool,
        completed: bool,
        cached: bool,
        error: Option<String>,
    },
    /// One line of a step's output (stdout or stderr), without its newline.
    Log { vertex_name: String, line: String },
    /// A warning BuildKit attached to a step.
    Warning {
        vertex_name: String,
        message: String,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct VertexState {
    name: String,
    started: bool,
    completed: bool,
    cached: bool,
    error: Option<String>,
}

impl VertexState {
    fn of(v: &Vertex) -> VertexState {
        VertexState {
            name: v.name.clone(),
            started: v.started.is_some(),
            completed: v.completed.is_some(),
            cached: v.cached,
            error: (!v.error.is_empty()).then(|| v.error.clone()),
        }
    }
}

/// Turns the Status stream's batches into events and remembers enough to explain a failure.
#[derive(Default)]
pub(crate) struct StatusMapper {
    vertexes: HashMap<String, VertexState>,
    /// Output after the last newline, per (vertex, stream).
    partial: HashMap<(String, i64), Vec<u8>>,
    tails: HashMap<String, VecDeque<String>>,
    /// The last step reported with an error.
    failed: Option<String>,
}

impl StatusMapper {
    /// Vertex updates in the batch's order, except that a step finishing in the same batch
    /// as some of its output is reported after that output.
    pub(crate) fn push(&mut self, update: StatusResponse, out: &mut impl FnMut(StatusEvent)) {
        let with_output: HashSet<&str> = update.logs.iter().map(|l| l.vertex.as_str()).collect();
        let (finishing, rest): (Vec<_>, Vec<_>) = update.vertexes.iter().partition(|v| {
            (v.completed.is_some() || !v.error.is_empty())
                && with_output.contains(v.digest.as_str())
        });
        for vertex in rest {
            self.vertex(vertex, out);
        }
        for log in update.logs {
            let key = (log.vertex, log.stream);
            let buf = self.partial.entry(key.clone()).or_default();
            buf.extend_from_slice(&log.msg);
            let Some(last_newline) = buf.iter().rposition(|b| *b == b'\n') else {
                continue;
            };
            let rest = buf.split_off(last_newline + 1);
            let mut complete = std::mem::replace(buf, rest);
            complete.pop(); // the final newline: `split` would yield an empty line after it
            for line in complete.split(|b| *b == b'\n') {
                self.line(&key.0, line, out);
            }
        }
        for vertex in finishing {
            self.vertex(vertex, out);
        }
        for warning in update.warnings {
            let mut message = String::from_utf8_lossy(&warning.short).into_owned();
            for detail in &warning.detail {
                message.push_str("\n  ");
                message.push_str(&String::from_utf8_lossy(detail));
            }
            out(StatusEvent::Warning {
                vertex_name: self.name_of(&warning.vertex),
                message,
            });
        }
    }

    /// Emits output that never got its final newline.
    pub(crate) fn finish(&mut self, out: &mut impl FnMut(StatusEvent)) {
        let mut partial: Vec<_> = std::mem::take(&mut self.partial).into_iter().collect();
        partial.sort();
        for ((vertex, _stream), rest) in partial {
            if !rest.is_empty() {
                self.line(&vertex, &rest, out);
            }
        }
    }

    /// The failing step's name and its last output lines, for the error of a failed solve.
    pub(crate) fn failure(&mut self) -> (Option<String>, Vec<String>) {
        self.finish(&mut |_| {});
        let Some(digest) = &self.failed else {
            return (None, Vec::new());
        };
        let tail = self
            .tails
            .get(digest)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        (Some(self.name_of(digest)), tail)
    }

    fn vertex(&mut self, vertex: &Vertex, out: &mut impl FnMut(StatusEvent)) {
        let state = VertexState::of(vertex);
        if state.error.is_some() {
            self.failed = Some(vertex.digest.clone());
        }
        if self.vertexes.get(&vertex.digest) == Some(&state) {
            return;
        }
        self.vertexes.insert(vertex.digest.clone(), state.clone());
        out(StatusEvent::Vertex {
            digest: vertex.digest.clone(),
            name: state.name,
            started: state.started,
            completed: state.completed,
            cached: state.cached,
            error: state.error,
        });
    }

    fn line(&mut self, vertex: &str, raw: &[u8], out: &mut impl FnMut(StatusEvent)) {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let mut line = String::from_utf8_lossy(raw).into_owned();
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
            line.push_str(" [...]");
        }
        let tail = self.tails.entry(vertex.to_string()).or_default();
        if tail.len() == LOG_TAIL {
            tail.pop_front();
        }
        tail.push_back(line.clone());
        out(StatusEvent::Log {
            vertex_name: self.name_of(vertex),
            line,
        });
    }

    fn name_of(&self, digest: &str) -> String {
        self.vertexes
            .get(digest)
            .map(|v| v.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| digest.to_string())
    }
}
