//! TLS on both sides: patchpull serving HTTPS (HTTP/2 via ALPN, HTTP/1.1 too), and an
//! upstream reached over HTTPS whose certificate only a configured `ca_file` makes
//! trusted. The HTTPS upstream is itself a patchpull in front of a real registry.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::images::{self, Format};
use common::registry::Registry;
use common::{error_code, require_tools, Proxy};

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

/// A test CA and a leaf certificate for 127.0.0.1 and localhost.
fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "patchpull test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn https_client(ca_pem: &str, http2_only: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    // Over TLS, HTTP/2 is chosen by ALPN; the HTTP/1.1 client offers only http/1.1.
    if !http2_only {
        b = b.http1_only();
    }
    b.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_and_pulls_from_an_https_upstream_with_a_custom_ca() {
    if !require_tools(&[common::registry::REGISTRY_BIN]) {
        return;
    }
    let registry = Registry::start().await;
    let image = images::single(Format::Oci, "tls");
    images::push_image(&registry.url(), "tls/app", "1", &image).await;

    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let cert = write(dir.path(), "cert.pem", &pki.cert_pem);
    let key = write(dir.path(), "key.pem", &pki.key_pem);
    let ca = write(dir.path(), "ca.pem", &pki.ca_pem);

    // The HTTPS front: patchpull with TLS in front of the plain registry.
    let front = Proxy::start(&[("local", &registry.url(), true)], |c| {
        c.server_extra.push(format!("tls_cert = {cert:?}"));
        c.server_extra.push(format!("tls_key = {key:?}"));
    })
    .await;
    let front_url = format!("https://{}", front.authority());
    let manifest_path = "/v2/tls/app/manifests/1";

    for http2 in [false, true] {
        let resp = https_client(&pki.ca_pem, http2)
            .get(format!("{front_url}{manifest_path}"))
            .header("Accept", images::ACCEPT_ALL)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let expected = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(resp.version(), expected);
        assert_eq!(resp.bytes().await.unwrap(), image.manifest.bytes.as_slice());
    }
    // Plain HTTP to the TLS port is not served.
    assert!(reqwest::get(format!("http://{}/v2/", front.authority()))
        .await
        .is_err());

    // An upstream over HTTPS: trusted through ca_file...
    let trusting = Proxy::start(&[("front", &front_url, true)], |c| {
        c.upstream_mut("front")
            .extra
            .push(format!("ca_file = {ca:?}"));
    })
    .await;
    let resp = trusting
        .request(
            reqwest::Method::GET,
            manifest_path,
            &[("Accept", images::ACCEPT_ALL)],
        )
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), image.manifest.bytes.as_slice());
    for blob in image.blobs() {
        let resp = trusting
            .get(&format!("/v2/tls/app/blobs/{}", blob.digest))
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.bytes().await.unwrap(), blob.data.as_slice());
    }

    // ...refused without it, with an error that says why...
    let untrusting = Proxy::start(&[("front", &front_url, true)], |c| {
        c.all_upstreams("retries = 0");
    })
    .await;
    let resp = untrusting
        .request(
            reqwest::Method::GET,
            manifest_path,
            &[("Accept", images::ACCEPT_ALL)],
        )
        .await;
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("certificate") || body.contains("Certificate"),
        "{body}"
    );

    // ...and accepted with insecure_skip_verify.
    let skipping = Proxy::start(&[("front", &front_url, true)], |c| {
        c.all_upstreams("insecure_skip_verify = true");
    })
    .await;
    let resp = skipping
        .request(
            reqwest::Method::GET,
            manifest_path,
            &[("Accept", images::ACCEPT_ALL)],
        )
        .await;
    assert_eq!(resp.status(), 200);
    let _ = error_code; // shared helper, unused here
}
