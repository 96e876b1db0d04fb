//! Wire-format checks: the LLB test vector from a real dockerd probe, and the Control
//! messages' field numbers.

use std::collections::BTreeMap;

use prost::Message;
use sha2::{Digest, Sha256};

use super::*;
use crate::buildkit::proto::ops::{
    op, CacheOpt, CacheSharingOpt, ExecOp, Input, Meta, Mount, MountType, NetMode, Op, SourceOp,
};

const SOURCE_HEX: &str = "1a320a30646f636b65722d696d6167653a2f2f3132372e302e302e313a353035352f6c6962726172792f64656269616e3a6f6c64520e0a05616d64363412056c696e7578";
const SOURCE_DIGEST: &str =
    "sha256:b48c1e1a042991f011527d5a9261de6e7cb4384df7491f66d262b372c84b50c7";
const EXEC_HEX: &str = "0a490a477368613235363a6234386331653161303432393931663031313532376435613932363164653665376362343338346466373439316636366432363262333732633834623530633712ac010a5d0a0273680a022d630a0d6563686f206869203e202f68691241504154483d2f7573722f6c6f63616c2f7362696e3a2f7573722f6c6f63616c2f62696e3a2f7573722f7362696e3a2f7573722f62696e3a2f7362696e3a2f62696e1a012f12031a012f124408ffffffffffffffffff011a122f7661722f6c69622f6170742f6c6973747320ffffffffffffffffff013003a201150a11626b70726f62652d6170742d6c6973747310021802520e0a05616d64363412056c696e7578";
const EXEC_DIGEST: &str = "sha256:0dbf82d452bbb4ca062006f3d5e488112077f2d9c2a95222f751a5c356a5c755";
const TERMINAL_HEX: &str = "0a490a477368613235363a30646266383264343532626262346361303632303036663364356534383831313230373766326439633261393532323266373531613563333536613563373535";
const TERMINAL_DIGEST: &str =
    "sha256:7ac73d79472e4a052540812444731b271c5f20b1e953ecd31e4dd01a618f4719";

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn amd64() -> Option<crate::buildkit::proto::ops::Platform> {
    Some(crate::buildkit::proto::ops::Platform {
        architecture: "amd64".into(),
        os: "linux".into(),
        variant: String::new(),
    })
}

/// Asserts equal hex, naming the first differing byte offset when not.
fn assert_same_bytes(what: &str, ours: &[u8], vector_hex: &str) {
    let ours_hex = hex::encode(ours);
    if ours_hex != vector_hex {
        let theirs = hex::decode(vector_hex).unwrap_or_default();
        let at = ours
            .iter()
            .zip(&theirs)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(theirs.len()));
        panic!(
            "{what}: encoding differs from the vector at byte {at} (ours {} bytes, vector {})\n ours: {ours_hex}\n want: {vector_hex}",
            ours.len(),
            theirs.len()
        );
    }
}

/// The probe graph (source -> exec with a cache mount -> terminal) marshals to exactly the
/// bytes a real BuildKit accepted, so our op digests are the ones BuildKit computes.
#[test]
fn llb_graph_matches_dockerd_probe_vector() {
    let source = Op {
        inputs: vec![],
        kind: Some(op::Kind::Source(SourceOp {
            identifier: "docker-image://127.0.0.1:5055/library/debian:old".into(),
            attrs: BTreeMap::new(),
        })),
        platform: amd64(),
        constraints: None,
    };
    let source_bytes = source.encode_to_vec();
    assert_same_bytes("source op", &source_bytes, SOURCE_HEX);
    assert_eq!(digest(&source_bytes), SOURCE_DIGEST);

    let exec = Op {
        inputs: vec![Input {
            digest: digest(&source_bytes),
            index: 0,
        }],
        kind: Some(op::Kind::Exec(ExecOp {
            meta: Some(Meta {
                args: vec!["sh".into(), "-c".into(), "echo hi > /hi".into()],
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                ],
                cwd: "/".into(),
                user: String::new(),
                hostname: String::new(),
            }),
            mounts: vec![
                Mount {
                    input: 0,
                    dest: "/".into(),
                    output: 0,
                    ..Default::default()
                },
                Mount {
                    input: -1,
                    dest: "/var/lib/apt/lists".into(),
                    output: -1,
                    mount_type: MountType::Cache as i32,
                    cache_opt: Some(CacheOpt {
                        id: "bkprobe-apt-lists".into(),
                        sharing: CacheSharingOpt::Locked as i32,
                    }),
                    ..Default::default()
                },
            ],
            network: NetMode::None as i32,
            security: 0,
        })),
        platform: amd64(),
        constraints: None,
    };
    let exec_bytes = exec.encode_to_vec();
    assert_same_bytes("exec op", &exec_bytes, EXEC_HEX);
    assert_eq!(digest(&exec_bytes), EXEC_DIGEST);

    let terminal = Op {
        inputs: vec![Input {
            digest: digest(&exec_bytes),
            index: 0,
        }],
        kind: None,
        platform: None,
        constraints: None,
    };
    let terminal_bytes = terminal.encode_to_vec();
    assert_same_bytes("terminal op", &terminal_bytes, TERMINAL_HEX);
    assert_eq!(digest(&terminal_bytes), TERMINAL_DIGEST);
}

#[test]
fn solve_request_uses_v0_8_field_numbers() {
    let mut attrs = BTreeMap::new();
    attrs.insert("name".to_string(), "x:1".to_string());
    let req = SolveRequest {
        r#ref: "r".into(),
        exporter: "moby".into(),
        exporter_attrs: attrs,
        entitlements: vec!["network.host".into()],
        ..Default::default()
    };
    let bytes = req.encode_to_vec();
    // Ref=1 "r"; Exporter=3 "moby"; ExporterAttrs=4 {name: x:1}; Entitlements=9.
    let want = concat!(
        "0a0172",
        "1a046d6f6279",
        "220b0a046e616d651203783a31",
        "4a0c6e6574776f726b2e686f7374"
    );
    assert_eq!(hex::encode(bytes), want);
}

#[test]
fn status_response_decodes_logs_and_vertexes() {
    let resp = StatusResponse {
        vertexes: vec![Vertex {
            digest: "sha256:aa".into(),
            name: "[1/2] RUN x".into(),
            started: Some(Timestamp {
                seconds: 5,
                nanos: 1,
            }),
            ..Default::default()
        }],
        logs: vec![VertexLog {
            vertex: "sha256:aa".into(),
            stream: 1,
            msg: b"hello\n".to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let back = StatusResponse::decode(resp.encode_to_vec().as_slice()).expect("decode");
    assert_eq!(back, resp);
}

#[test]
fn worker_record_ignores_unknown_fields() {
    // A record with GCPolicy (4) that we do not declare: decoding keeps the rest.
    let mut bytes = WorkerRecord {
        id: "moby".into(),
        platforms: amd64().into_iter().collect(),
        ..Default::default()
    }
    .encode_to_vec();
    bytes.extend_from_slice(&hex::decode("22020801").unwrap_or_default());
    let back = WorkerRecord::decode(bytes.as_slice()).expect("decode");
    assert_eq!(back.id, "moby");
    assert_eq!(back.platforms.len(), 1);
}
