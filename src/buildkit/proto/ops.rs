//! LLB, BuildKit's build graph (`solver/pb/ops.proto`, package `pb`). Fields are declared
//! in field-number order: prost writes them in declaration order, and BuildKit's Go code
//! writes them by number, so the same op has the same bytes (and digest) from either.

use std::collections::BTreeMap;

/// One vertex of the graph.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Op {
    #[prost(message, repeated, tag = "1")]
    pub inputs: Vec<Input>,
    #[prost(oneof = "op::Kind", tags = "2, 3, 4, 6, 7")]
    pub kind: Option<op::Kind>,
    #[prost(message, optional, tag = "10")]
    pub platform: Option<Platform>,
    #[prost(message, optional, tag = "11")]
    pub constraints: Option<WorkerConstraints>,
}

pub mod op {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        #[prost(message, tag = "2")]
        Exec(super::ExecOp),
        #[prost(message, tag = "3")]
        Source(super::SourceOp),
        #[prost(message, tag = "4")]
        File(super::FileOp),
        #[prost(message, tag = "6")]
        Merge(super::MergeOp),
        #[prost(message, tag = "7")]
        Diff(super::DiffOp),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Platform {
    #[prost(string, tag = "1")]
    pub architecture: String,
    #[prost(string, tag = "2")]
    pub os: String,
    #[prost(string, tag = "3")]
    pub variant: String,
}

/// An edge: output `index` of the op whose marshalled bytes hash to `digest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Input {
    #[prost(string, tag = "1")]
    pub digest: String,
    #[prost(int64, tag = "2")]
    pub index: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExecOp {
    #[prost(message, optional, tag = "1")]
    pub meta: Option<Meta>,
    #[prost(message, repeated, tag = "2")]
    pub mounts: Vec<Mount>,
    #[prost(enumeration = "NetMode", tag = "3")]
    pub network: i32,
    #[prost(enumeration = "SecurityMode", tag = "4")]
    pub security: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Meta {
    #[prost(string, repeated, tag = "1")]
    pub args: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub env: Vec<String>,
    #[prost(string, tag = "3")]
    pub cwd: String,
    #[prost(string, tag = "4")]
    pub user: String,
    #[prost(string, tag = "7")]
    pub hostname: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum NetMode {
    /// The daemon's default network sandbox.
    Unset = 0,
    Host = 1,
    None = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SecurityMode {
    Sandbox = 0,
    Insecure = 1,
}

/// A filesystem in the exec's container: input `input` (or -1 for none) at `dest`,
/// written to output `output` (or -1 when the changes are not an output).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Mount {
    #[prost(int64, tag = "1")]
    pub input: i64,
    #[prost(string, tag = "2")]
    pub selector: String,
    #[prost(string, tag = "3")]
    pub dest: String,
    #[prost(int64, tag = "4")]
    pub output: i64,
    #[prost(bool, tag = "5")]
    pub readonly: bool,
    #[prost(enumeration = "MountType", tag = "6")]
    pub mount_type: i32,
    #[prost(message, optional, tag = "19")]
    pub tmpfs_opt: Option<TmpfsOpt>,
    #[prost(message, optional, tag = "20")]
    pub cache_opt: Option<CacheOpt>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MountType {
    Bind = 0,
    Secret = 1,
    Ssh = 2,
    Cache = 3,
    Tmpfs = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TmpfsOpt {
    #[prost(int64, tag = "1")]
    pub size: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CacheOpt {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(enumeration = "CacheSharingOpt", tag = "2")]
    pub sharing: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum CacheSharingOpt {
    Shared = 0,
    Private = 1,
    /// A second writer waits for the first: apt's lists and archives are not safe to share.
    Locked = 2,
}

/// `docker-image://<ref>` and the like; `attrs` as in BuildKit's `solver/pb/attr.go`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SourceOp {
    #[prost(string, tag = "1")]
    pub identifier: String,
    #[prost(btree_map = "string, string", tag = "2")]
    pub attrs: BTreeMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OpMetadata {
    #[prost(bool, tag = "1")]
    pub ignore_cache: bool,
    #[prost(btree_map = "string, string", tag = "2")]
    pub description: BTreeMap<String, String>,
    #[prost(btree_map = "string, bool", tag = "5")]
    pub caps: BTreeMap<String, bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkerConstraints {
    #[prost(string, repeated, tag = "1")]
    pub filter: Vec<String>,
}

/// The graph: marshalled ops, the last one the terminal op naming the result.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Definition {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub def: Vec<Vec<u8>>,
    #[prost(btree_map = "string, message", tag = "2")]
    pub metadata: BTreeMap<String, OpMetadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileOp {
    #[prost(message, repeated, tag = "2")]
    pub actions: Vec<FileAction>,
}

/// One action; `input`/`secondary_input` name op inputs, or earlier actions' outputs
/// counted after the inputs; -1 for none.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FileAction {
    #[prost(int64, tag = "1")]
    pub input: i64,
    #[prost(int64, tag = "2")]
    pub secondary_input: i64,
    #[prost(int64, tag = "3")]
    pub output: i64,
    #[prost(oneof = "file_action::Action", tags = "4, 5, 6, 7")]
    pub action: Option<file_action::Action>,
}

pub mod file_action {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Action {
        #[prost(message, tag = "4")]
        Copy(super::FileActionCopy),
        #[prost(message, tag = "5")]
        Mkfile(super::FileActionMkFile),
        #[prost(message, tag = "6")]
        Mkdir(super::FileActionMkDir),
        #[prost(message, tag = "7")]
        Rm(super::FileActionRm),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionCopy {
    #[prost(string, tag = "1")]
    pub src: String,
    #[prost(string, tag = "2")]
    pub dest: String,
    #[prost(int32, tag = "4")]
    pub mode: i32,
    #[prost(bool, tag = "5")]
    pub follow_symlink: bool,
    #[prost(bool, tag = "6")]
    pub dir_copy_contents: bool,
    #[prost(bool, tag = "8")]
    pub create_dest_path: bool,
    #[prost(bool, tag = "9")]
    pub allow_wildcard: bool,
    #[prost(bool, tag = "10")]
    pub allow_empty_wildcard: bool,
    #[prost(int64, tag = "11")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionMkFile {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(int32, tag = "2")]
    pub mode: i32,
    #[prost(bytes = "vec", tag = "3")]
    pub data: Vec<u8>,
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionMkDir {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(int32, tag = "2")]
    pub mode: i32,
    #[prost(bool, tag = "3")]
    pub make_parents: bool,
    #[prost(int64, tag = "5")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileActionRm {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(bool, tag = "2")]
    pub allow_not_found: bool,
    #[prost(bool, tag = "3")]
    pub allow_wildcard: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MergeInput {
    #[prost(int64, tag = "1")]
    pub input: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct MergeOp {
    #[prost(message, repeated, tag = "1")]
    pub inputs: Vec<MergeInput>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LowerDiffInput {
    #[prost(int64, tag = "1")]
    pub input: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpperDiffInput {
    #[prost(int64, tag = "1")]
    pub input: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DiffOp {
    #[prost(message, optional, tag = "1")]
    pub lower: Option<LowerDiffInput>,
    #[prost(message, optional, tag = "2")]
    pub upper: Option<UpperDiffInput>,
}
