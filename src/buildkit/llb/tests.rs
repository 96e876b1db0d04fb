use super::*;
use crate::buildkit::proto::ops::{op, NetMode};

/// The graph probed against dockerd 20.10's BuildKit (shared/reference/buildkit-dockerd.md):
/// the same calls must give the same bytes, or BuildKit would see other ops.
#[test]
fn probe_graph_encodes_to_the_recorded_bytes() {
    let mut graph = Graph::new(Some(platform("linux", "amd64", None)));
    let source = graph.image("127.0.0.1:5055/library/debian:old");
    let outputs = graph.exec(Exec {
        root: source,
        args: vec!["sh".into(), "-c".into(), "echo hi > /hi".into()],
        env: Vec::new(),
        cwd: "/".into(),
        user: String::new(),
        network: NetMode::None,
        mounts: vec![ExecMount::Cache {
            dest: "/var/lib/apt/lists".into(),
            id: "bkprobe-apt-lists".into(),
        }],
        name: None,
        ignore_cache: false,
    });
    let definition = graph.definition(&outputs[0]);
    let expected = [
        (
            "sha256:b48c1e1a042991f011527d5a9261de6e7cb4384df7491f66d262b372c84b50c7",
            "1a320a30646f636b65722d696d6167653a2f2f3132372e302e302e313a353035352f6c6962726172792f64656269616e3a6f6c64520e0a05616d64363412056c696e7578",
        ),
        (
            "sha256:0dbf82d452bbb4ca062006f3d5e488112077f2d9c2a95222f751a5c356a5c755",
            "0a490a477368613235363a6234386331653161303432393931663031313532376435613932363164653665376362343338346466373439316636366432363262333732633834623530633712ac010a5d0a0273680a022d630a0d6563686f206869203e202f68691241504154483d2f7573722f6c6f63616c2f7362696e3a2f7573722f6c6f63616c2f62696e3a2f7573722f7362696e3a2f7573722f62696e3a2f7362696e3a2f62696e1a012f12031a012f124408ffffffffffffffffff011a122f7661722f6c69622f6170742f6c6973747320ffffffffffffffffff013003a201150a11626b70726f62652d6170742d6c6973747310021802520e0a05616d64363412056c696e7578",
        ),
        (
            "sha256:7ac73d79472e4a052540812444731b271c5f20b1e953ecd31e4dd01a618f4719",
            "0a490a477368613235363a30646266383264343532626262346361303632303036663364356534383831313230373766326439633261393532323266373531613563333536613563373535",
        ),
    ];
    assert_eq!(definition.def.len(), expected.len());
    for (bytes, (digest, hex_bytes)) in definition.def.iter().zip(expected) {
        assert_eq!(hex::encode(bytes), hex_bytes);
        assert_eq!(op_digest(bytes), digest);
    }
    assert!(definition.metadata.contains_key(expected[2].0));
}

#[test]
fn writable_binds_are_extra_outputs_and_shared_inputs_are_named_once() {
    let mut graph = Graph::new(None);
    let tools = graph.image("registry.local/tools@sha256:aa");
    let target = graph.image("registry.local/app@sha256:bb");
    let outputs = graph.exec(Exec {
        root: tools.clone(),
        args: vec!["true".into()],
        env: vec!["PATH=/bin".into()],
        cwd: String::new(),
        user: String::new(),
        network: NetMode::Host,
        mounts: vec![
            ExecMount::Bind {
                dest: "/target".into(),
                source: target.clone(),
                writable: true,
            },
            ExecMount::Bind {
                dest: "/tools".into(),
                source: tools.clone(),
                writable: false,
            },
            ExecMount::Tmpfs {
                dest: "/tmp".into(),
                size: 0,
            },
        ],
        name: Some("patch".into()),
        ignore_cache: true,
    });
    assert_eq!(outputs.len(), 2);
    assert_eq!(outputs[1].index, 1);
    let definition = graph.definition(&outputs[1]);
    let exec = Op::decode(definition.def[2].as_slice()).unwrap();
    assert_eq!(exec.inputs.len(), 2, "tools is one input, used twice");
    let Some(op::Kind::Exec(exec_op)) = exec.kind else {
        panic!("not an exec")
    };
    let mounts: Vec<(i64, &str, i64, bool)> = exec_op
        .mounts
        .iter()
        .map(|m| (m.input, m.dest.as_str(), m.output, m.readonly))
        .collect();
    assert_eq!(
        mounts,
        [
            (0, "/", 0, false),
            (1, "/target", 1, false),
            (0, "/tools", -1, true),
            (-1, "/tmp", -1, false)
        ]
    );
    let meta = exec_op.meta.unwrap();
    assert_eq!(meta.env, ["PATH=/bin"], "an explicit PATH is kept");
    assert_eq!(meta.cwd, "/");
    let exec_digest = op_digest(&definition.def[2]);
    assert_eq!(
        definition.metadata[&exec_digest].description["llb.customname"],
        "patch"
    );
    assert!(definition.metadata[&exec_digest].ignore_cache);
}

#[test]
fn diff_and_merge_record_their_capabilities_and_the_same_op_is_one_vertex() {
    let mut graph = Graph::new(None);
    let base = graph.image("r/app@sha256:cc");
    let again = graph.image("r/app@sha256:cc");
    assert_eq!(base, again);
    let changed = graph.mkfile(&base, "/etc/marker", b"x".to_vec(), 0o644);
    let diff = graph.diff(&base, &changed);
    let merged = graph.merge(&[base.clone(), diff.clone()]);
    let definition = graph.definition(&merged);
    assert_eq!(
        definition.def.len(),
        5,
        "source, file, diff, merge, terminal"
    );
    assert!(definition.metadata[diff.digest()].caps["diffop"]);
    assert!(definition.metadata[merged.digest()].caps["mergeop"]);
    let merge = Op::decode(definition.def[3].as_slice()).unwrap();
    assert_eq!(merge.inputs[0].digest, base.digest());
    assert_eq!(merge.inputs[1].digest, diff.digest());
}
