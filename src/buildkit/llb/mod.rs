//! A small LLB graph builder: image sources, execs with bind, cache and tmpfs mounts, file
//! ops, diff and merge. Each op is marshalled once, when added; its digest is the sha256 of
//! those bytes, which is how later ops name it and how BuildKit caches it. The same calls
//! give the same [`Definition`] bytes every time.

use std::collections::BTreeMap;

use prost::Message;

use crate::buildkit::proto::ops::{
    self, op, CacheOpt, CacheSharingOpt, DiffOp, ExecOp, FileAction, FileActionMkFile, FileOp,
    Input, LowerDiffInput, MergeInput, MergeOp, Meta, Mount, MountType, NetMode, Op, OpMetadata,
    SourceOp, TmpfsOpt, UpperDiffInput,
};

pub use crate::buildkit::proto::ops::Platform;

/// One output of an op: what a later op takes as an input or a mount.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Output {
    digest: String,
    index: i64,
}

impl Output {
    /// The digest of the op this is an output of.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// A mount of an exec besides its root.
#[derive(Debug, Clone)]
pub enum ExecMount {
    /// `source` at `dest`; when `writable`, the changes are one more output of the exec.
    Bind {
        dest: String,
        source: Output,
        writable: bool,
    },
    /// A persistent cache shared by every exec that names `id`; never part of an output.
    Cache { dest: String, id: String },
    /// An empty tmpfs.
    Tmpfs { dest: String, size: i64 },
}

/// A command run in a container whose root is `root`.
#[derive(Debug, Clone)]
pub struct Exec {
    pub root: Output,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub network: NetMode,
    pub mounts: Vec<ExecMount>,
    /// Shown in BuildKit's progress instead of the command line.
    pub name: Option<String>,
    /// Run it even when BuildKit has its result cached (`docker build --no-cache`).
    pub ignore_cache: bool,
}

/// The graph being built.
#[derive(Debug, Default)]
pub struct Graph {
    ops: Vec<Vec<u8>>,
    digests: Vec<String>,
    metadata: BTreeMap<String, OpMetadata>,
    platform: Option<Platform>,
}

/// The `PATH` BuildKit's own LLB gives an exec that sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Graph {
    /// A graph whose ops all run on `platform` (`None`: the worker's own).
    pub fn new(platform: Option<Platform>) -> Graph {
        Graph {
            platform,
            ..Graph::default()
        }
    }

    /// `docker-image://<reference>`: the image's root filesystem. `reference` should carry
    /// a digest, so the graph names exactly one image.
    pub fn image(&mut self, reference: &str) -> Output {
        // No attrs: the default resolve mode, as BuildKit's own client leaves it.
        let attrs = BTreeMap::new();
        self.add(
            Vec::new(),
            op::Kind::Source(SourceOp {
                identifier: format!("docker-image://{reference}"),
                attrs,
            }),
            &[],
            None,
        )
    }

    /// Runs `exec`. Output 0 is the changed root; each writable bind mount adds the next
    /// output, in order.
    pub fn exec(&mut self, exec: Exec) -> Vec<Output> {
        let mut inputs: Vec<Output> = Vec::new();
        let mut input_of = |output: &Output| -> i64 {
            match inputs.iter().position(|i| i == output) {
                Some(at) => at as i64,
                None => {
                    inputs.push(output.clone());
                    inputs.len() as i64 - 1
                }
            }
        };
        let mut mounts = vec![Mount {
            input: input_of(&exec.root),
            dest: "/".to_owned(),
            output: 0,
            ..Mount::default()
        }];
        let mut outputs = 1;
        for mount in &exec.mounts {
            mounts.push(match mount {
                ExecMount::Bind {
                    dest,
                    source,
                    writable,
                } => {
                    let output = if *writable {
                        outputs += 1;
                        outputs - 1
                    } else {
                        -1
                    };
                    Mount {
                        input: input_of(source),
                        dest: dest.clone(),
                        output,
                        readonly: !writable,
                        ..Mount::default()
                    }
                }
                ExecMount::Cache { dest, id } => Mount {
                    input: -1,
                    dest: dest.clone(),
                    output: -1,
                    mount_type: MountType::Cache as i32,
                    cache_opt: Some(CacheOpt {
                        id: id.clone(),
                        sharing: CacheSharingOpt::Locked as i32,
                    }),
                    ..Mount::default()
                },
                ExecMount::Tmpfs { dest, size } => Mount {
                    input: -1,
                    dest: dest.clone(),
                    output: -1,
                    mount_type: MountType::Tmpfs as i32,
                    tmpfs_opt: Some(TmpfsOpt { size: *size }),
                    ..Mount::default()
                },
            });
        }
        let env = if exec.env.iter().any(|e| e.starts_with("PATH=")) {
            exec.env.clone()
        } else {
            let mut env = vec![DEFAULT_PATH.to_owned()];
            env.extend(exec.env.iter().cloned());
            env
        };
        let kind = op::Kind::Exec(ExecOp {
            meta: Some(Meta {
                args: exec.args.clone(),
                env,
                cwd: if exec.cwd.is_empty() {
                    "/".to_owned()
                } else {
                    exec.cwd.clone()
                },
                user: exec.user.clone(),
                hostname: String::new(),
            }),
            mounts,
            network: exec.network as i32,
            security: 0,
        });
        let first = self.add(inputs, kind, &[], exec.name.as_deref());
        if exec.ignore_cache {
            if let Some(metadata) = self.metadata.get_mut(&first.digest) {
                metadata.ignore_cache = true;
            }
        }
        (0..outputs)
            .map(|index| Output {
                digest: first.digest.clone(),
                index,
            })
            .collect()
    }

    /// `base` with a file at `path` (parents made).
    pub fn mkfile(&mut self, base: &Output, path: &str, data: Vec<u8>, mode: i32) -> Output {
        self.add(
            vec![base.clone()],
            op::Kind::File(FileOp {
                actions: vec![FileAction {
                    input: 0,
                    secondary_input: -1,
                    output: 0,
                    action: Some(ops::file_action::Action::Mkfile(FileActionMkFile {
                        path: path.to_owned(),
                        mode,
                        data,
                        timestamp: 0,
                    })),
                }],
            }),
            &[],
            None,
        )
    }

    /// What `upper` changed relative to `lower` (BuildKit 0.10 and later).
    pub fn diff(&mut self, lower: &Output, upper: &Output) -> Output {
        self.add(
            vec![lower.clone(), upper.clone()],
            op::Kind::Diff(DiffOp {
                lower: Some(LowerDiffInput { input: 0 }),
                upper: Some(UpperDiffInput { input: 1 }),
            }),
            &["diffop"],
            None,
        )
    }

    /// `layers` stacked in order, each keeping its own layers (BuildKit 0.10 and later).
    pub fn merge(&mut self, layers: &[Output]) -> Output {
        self.add(
            layers.to_vec(),
            op::Kind::Merge(MergeOp {
                inputs: (0..layers.len() as i64)
                    .map(|input| MergeInput { input })
                    .collect(),
            }),
            &["mergeop"],
            None,
        )
    }

    /// The definition whose result is `result`: every op added, then the terminal op that
    /// names it.
    pub fn definition(mut self, result: &Output) -> ops::Definition {
        let terminal = Op {
            inputs: vec![input(result)],
            ..Op::default()
        };
        self.push(terminal.encode_to_vec(), OpMetadata::default());
        ops::Definition {
            def: self.ops,
            metadata: self.metadata,
        }
    }

    fn add(
        &mut self,
        inputs: Vec<Output>,
        kind: op::Kind,
        caps: &[&str],
        name: Option<&str>,
    ) -> Output {
        let op = Op {
            inputs: inputs.iter().map(input).collect(),
            kind: Some(kind),
            platform: self.platform.clone(),
            constraints: None,
        };
        let mut metadata = OpMetadata::default();
        for cap in caps {
            metadata.caps.insert((*cap).to_owned(), true);
        }
        if let Some(name) = name {
            metadata
                .description
                .insert("llb.customname".to_owned(), name.to_owned());
        }
        let digest = self.push(op.encode_to_vec(), metadata);
        Output { digest, index: 0 }
    }

    /// Adds marshalled op bytes once; the same op twice is one vertex.
    fn push(&mut self, bytes: Vec<u8>, metadata: OpMetadata) -> String {
        let digest = op_digest(&bytes);
        if !self.digests.contains(&digest) {
            self.ops.push(bytes);
            self.digests.push(digest.clone());
            self.metadata.insert(digest.clone(), metadata);
        }
        digest
    }
}

fn input(output: &Output) -> Input {
    Input {
        digest: output.digest.clone(),
        index: output.index,
    }
}

/// `sha256:<hex>` of an op's marshalled bytes.
pub fn op_digest(bytes: &[u8]) -> String {
    crate::distribution::Digest::sha256_of(bytes).to_string()
}

/// The platform `os/arch[/variant]` in LLB's form.
pub fn platform(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
    Platform {
        architecture: architecture.to_owned(),
        os: os.to_owned(),
        variant: variant.unwrap_or_default().to_owned(),
    }
}

#[cfg(test)]
mod tests;
