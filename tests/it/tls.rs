//! Agent to server over TLS (rustls), with certificates made here (rcgen): the right CA works;
//! a wrong CA or a wrong host name is refused.

use std::path::Path;

pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    pub(crate) other_ca_pem: String,
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

fn ca() -> (rcgen::CertificateParams, rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "mxsync test CA");
    let cert = params.self_signed(&key).unwrap();
    (params, key, cert.pem())
}

/// A CA, another CA, and a certificate for "localhost" signed by the first.
pub(crate) fn pki() -> Pki {
    let (ca_params, ca_key, ca_pem) = ca();
    let (_, _, other_ca_pem) = ca();
    let key = rcgen::KeyPair::generate().unwrap();
    // Only the name "localhost": connecting as 127.0.0.1 is a wrong host name.
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem,
        other_ca_pem,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn agent_config(dir: &Path, url: &str, ca: &str) -> agent::config::Config {
    let p = tests::Primary::new(&dir.join("primary"));
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    let mut cfg = p.agent_config(&dir.join("agent-state"), &[(url, &dir.join("agent.key"))]);
    cfg.receivers[0].ca_file = Some(dir.join("ca.pem"));
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_needs_the_right_ca_and_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let sdir = dir.path().join("secondary");
    std::fs::create_dir_all(&sdir).unwrap();
    std::fs::write(sdir.join("cert.pem"), &pki.cert_pem).unwrap();
    tests::write_key(&sdir.join("key.pem"), &pki.key_pem);
    let config = tests::server_config(
        &sdir,
        "[tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n",
    );
    let server = tests::RunningServer::start(&config).await;
    let port = server.url.rsplit(':').next().unwrap().to_string();
    tests::write_key(&dir.path().join("agent.key"), tests::KEY);
    let good = format!("https://localhost:{port}");
    // Wait until the server serves (a plain TCP connect would succeed before it does).
    let cfg = agent_config(dir.path(), &good, &pki.ca_pem);
    let mut accepted = false;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !accepted && std::time::Instant::now() < deadline {
        accepted = agent::run::once(cfg.clone()).await.unwrap();
    }
    assert!(accepted, "the right CA and host name must work");
    let text = std::fs::read_to_string(sdir.join("maps/postfix/virtual")).unwrap();
    assert!(text.contains("a@example.org r1@remote.net"), "{text}");
    // A CA that did not sign the server's certificate.
    let wrong_ca = agent_config(dir.path(), &good, &pki.other_ca_pem);
    assert!(
        !agent::run::once(wrong_ca).await.unwrap(),
        "a wrong CA must be refused"
    );
    // The right CA, but a name the certificate does not carry.
    let wrong_name = agent_config(
        dir.path(),
        &format!("https://127.0.0.1:{port}"),
        &pki.ca_pem,
    );
    assert!(
        !agent::run::once(wrong_name).await.unwrap(),
        "a wrong host name must be refused"
    );
    // Plain HTTP to the TLS port gets nowhere either.
    let plain = agent_config(dir.path(), &format!("http://localhost:{port}"), &pki.ca_pem);
    assert!(!agent::run::once(plain).await.unwrap());
    server.stop().await;
}
