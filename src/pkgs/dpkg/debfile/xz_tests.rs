//! The xz decoder against xz(1): every preset family, block splitting, check types, LZMA
//! literal/position parameters, concatenated streams; damage must be an error, and a
//! dictionary beyond the memory bound is refused before it is allocated.

use std::io::Write;
use std::process::{Command, Stdio};

use super::{Compression, MAX_XZ_MEMORY};

fn have_xz() -> bool {
    let ok = Command::new("xz")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("REQUIRE_TEST_TOOLS").as_deref() != Ok("1"),
            "xz is required (REQUIRE_TEST_TOOLS=1)"
        );
        eprintln!("skipping: xz not found");
    }
    ok
}

fn xz(args: &[&str], data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("xz")
        .args(["-c", "-q"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "xz {args:?}");
    out.stdout
}

fn unxz(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    Compression::Xz
        .decompress(compressed, &mut out)
        .map(|()| out)
}

/// Deterministic pseudo-random bytes (xorshift), for incompressible input.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// Text-like data with long and short repeats, and some noise mixed in.
fn mixed(len: usize) -> Vec<u8> {
    let words = [
        "usr",
        "lib",
        "share",
        "doc",
        "x86_64-linux-gnu",
        "\n",
        "/",
        ".so.6",
        " ",
    ];
    let rand = noise(len, 7);
    let mut out = Vec::with_capacity(len);
    let mut i = 0;
    while out.len() < len {
        let r = rand[i % rand.len()] as usize;
        match r % 7 {
            0 => out.extend_from_slice(
                &rand[i % rand.len()..(i % rand.len() + r % 40).min(rand.len())],
            ),
            1 if out.len() > 1000 => {
                let start = out.len() - 1 - (r * 37) % 1000;
                let chunk: Vec<u8> = out[start..(start + r % 300).min(out.len())].to_vec();
                out.extend_from_slice(&chunk);
            }
            _ => out.extend_from_slice(words[r % words.len()].as_bytes()),
        }
        i += 1;
    }
    out.truncate(len);
    out
}

#[test]
fn matches_xz_for_every_kind_of_stream() {
    if !have_xz() {
        return;
    }
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("one byte", b"x".to_vec()),
        ("noise", noise(300_000, 1)),
        ("zeros", vec![0; 3_000_000]),
        ("mixed", mixed(1_200_000)),
    ];
    let option_sets: &[&[&str]] = &[
        &["-0"],
        &["-6"],
        &["-9e"],
        &["-6", "--check=crc32"],
        &["-6", "--check=sha256"],
        &["-6", "--check=none"],
        &["-3", "-T2", "--block-size=100KiB"],
        &["--lzma2=preset=6,lc=0,lp=2,pb=0"],
        &["--lzma2=preset=6,lc=4,lp=0,pb=4"],
        &["--lzma2=preset=1,dict=4KiB,mf=hc3"],
    ];
    for (name, data) in &inputs {
        for options in option_sets {
            let compressed = xz(options, data);
            let decoded = unxz(&compressed).unwrap_or_else(|e| panic!("{name} {options:?}: {e}"));
            assert!(decoded == *data, "{name} {options:?}: output differs");
        }
    }
    // Two streams with stream padding between them, as `cat a.xz b.xz` gives.
    let mut two = xz(&["-1"], b"first ");
    two.extend_from_slice(&[0; 8]);
    two.extend_from_slice(&xz(&["-1", "--check=crc32"], b"second"));
    assert_eq!(unxz(&two).unwrap(), b"first second");
}

#[test]
fn damage_is_an_error_never_a_panic() {
    if !have_xz() {
        return;
    }
    let data = mixed(200_000);
    let compressed = xz(&["-6", "--block-size=50KiB"], &data);
    for cut in (0..compressed.len()).step_by(97) {
        assert!(unxz(&compressed[..cut]).is_err(), "cut at {cut}");
    }
    for at in (0..compressed.len()).step_by(13) {
        let mut damaged = compressed.clone();
        damaged[at] ^= 0x10;
        assert!(unxz(&damaged).is_err(), "flipped byte {at}");
    }
    let mut trailing = compressed.clone();
    trailing.extend_from_slice(b"junk");
    assert!(unxz(&trailing).is_err());
    let mut noisy = compressed[..12].to_vec();
    noisy.extend_from_slice(&noise(100_000, 3));
    assert!(unxz(&noisy).is_err());
}

#[test]
fn huge_dictionaries_are_refused_and_branch_filters_decode() {
    if !have_xz() {
        return;
    }
    let big = xz(&["--lzma2=preset=6,dict=512MiB"], b"small");
    let err = unxz(&big).unwrap_err();
    let bound = format!("more than {} MiB of memory", MAX_XZ_MEMORY >> 20);
    assert!(err.to_string().contains(&bound), "{err}");
    // liblzma decodes xz's branch/call/jump filters, as xz(1) and dpkg do.
    let data = mixed(10_000);
    let x86 = xz(&["--x86", "--lzma2=preset=6"], &data);
    assert_eq!(unxz(&x86).unwrap(), data);
}

#[test]
fn legacy_lzma_decodes_and_a_huge_dictionary_is_refused() {
    if !have_xz() {
        return;
    }
    let data = mixed(100_000);
    let lzma = xz(&["--format=lzma"], &data);
    let mut out = Vec::new();
    Compression::Lzma
        .decompress(lzma.as_slice(), &mut out)
        .unwrap();
    assert_eq!(out, data);
    let big = xz(&["--format=lzma", "--lzma1=preset=6,dict=1GiB"], b"small");
    let err = Compression::Lzma
        .decompress(big.as_slice(), &mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains("MiB of memory"), "{err}");
    let cut = Compression::Lzma.decompress(&lzma[..lzma.len() / 2], &mut Vec::new());
    assert!(cut.is_err());
}
