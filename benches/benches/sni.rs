//! What choosing the listener's certificate by SNI costs a handshake: the default only;
//! the first, last and none of ten named certificates for a name seen before; and a name
//! never seen before. Each includes copying the chosen certificate out (`certificate`
//! returns its DER).

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard_server::{CertFiles, ListenerOptions, ListenerTls};

fn write_certificate(dir: &std::path::Path, name: &str) -> CertFiles {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let files = CertFiles {
        cert_file: dir.join(format!("{name}.pem")),
        key_file: dir.join(format!("{name}.key")),
    };
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    std::fs::write(&files.key_file, key.serialize_pem()).unwrap();
    files
}

fn sni(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("switchyard-sni-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let default = write_certificate(&dir, "default.test");
    let named: Vec<_> = (0..10)
        .map(|i| write_certificate(&dir, &format!("host{i}.example.test")))
        .collect();
    let one = ListenerTls::load(&default, &[], &ListenerOptions::default()).unwrap();
    let ten = ListenerTls::load(&default, &named, &ListenerOptions::default()).unwrap();
    let mut group = c.benchmark_group("sni");
    group.bench_function("no named certificates", |b| {
        b.iter(|| one.certificate(Some("host0.example.test")))
    });
    group.bench_function("first of ten", |b| {
        b.iter(|| ten.certificate(Some("host0.example.test")))
    });
    group.bench_function("last of ten", |b| {
        b.iter(|| ten.certificate(Some("host9.example.test")))
    });
    group.bench_function("none of ten", |b| {
        b.iter(|| ten.certificate(Some("other.test")))
    });
    let mut n = 0u64;
    group.bench_function("a new name, none of ten", |b| {
        b.iter(|| {
            n += 1;
            ten.certificate(Some(&format!("n{n}.other.test")))
        })
    });
    group.finish();
    std::fs::remove_dir_all(&dir).unwrap();
}

criterion_group!(benches, sni);
criterion_main!(benches);
