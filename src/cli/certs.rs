//! `stockraft certs`: a throwaway cluster CA and certificates for `[tls]`.
//!
//! For local clusters and tests, not a PKI: the CA's key is written beside the certificates
//! (owner-only) so more nodes can be signed later by running the command again with the same
//! `--out` (the existing CA is reused). Every node certificate is valid as server *and* client
//! (nodes call each other with it), for the names `localhost`, `127.0.0.1`, `::1`, `node-N` and
//! any `--host`. `admin.pem` is a client certificate for operators (`stockraft admin --tls-dir`).
//!
//! Files written in `--out`: `ca.pem`, `ca-key.pem`, `node-N.pem`, `node-N-key.pem`,
//! `admin.pem`, `admin-key.pem`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Directory to write the files into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Node ids to make certificates for, comma-separated (e.g. `1,2,3`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<u64>,
    /// Extra host names or IP addresses every node certificate is valid for.
    #[arg(long = "host")]
    pub hosts: Vec<String>,
}

/// The CA's file names in `--out`.
pub const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";

pub fn run(args: &CertsArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let (ca_params, ca_key) = ca(&args.out)?;
    let ca = ca_params
        .self_signed(&ca_key)
        .context("signing the CA certificate")?;
    for id in &args.nodes {
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
            format!("node-{id}"),
        ];
        names.extend(args.hosts.iter().cloned());
        let key = KeyPair::generate()?;
        let cert = leaf(&format!("stockraft node {id}"), names)?.signed_by(&key, &ca, &ca_key)?;
        write(&args.out, &format!("node-{id}.pem"), &cert.pem(), false)?;
        write(
            &args.out,
            &format!("node-{id}-key.pem"),
            &key.serialize_pem(),
            true,
        )?;
    }
    let key = KeyPair::generate()?;
    let admin = leaf("stockraft operator", Vec::new())?.signed_by(&key, &ca, &ca_key)?;
    write(&args.out, "admin.pem", &admin.pem(), false)?;
    write(&args.out, "admin-key.pem", &key.serialize_pem(), true)?;
    println!(
        "certs: CA, node certificates for {:?} and admin.pem written to {}",
        args.nodes,
        args.out.display()
    );
    Ok(())
}

/// The CA's parameters and key: the existing ones in `out`, or new ones (written).
fn ca(out: &Path) -> anyhow::Result<(CertificateParams, KeyPair)> {
    let key_path = out.join(CA_KEY);
    let key = if key_path.exists() {
        let pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        KeyPair::from_pem(&pem).with_context(|| format!("parsing {}", key_path.display()))?
    } else {
        let key = KeyPair::generate()?;
        write(out, CA_KEY, &key.serialize_pem(), true)?;
        key
    };
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name("stockraft cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    // Re-signing the same parameters with the same key gives a certificate every earlier leaf
    // still verifies against (same subject, same key); it is rewritten each run.
    let cert = params.clone().self_signed(&key)?;
    write(out, CA_CERT, &cert.pem(), false)?;
    Ok((params, key))
}

fn leaf(common_name: &str, names: Vec<String>) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = name(common_name);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    Ok(params)
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// Writes `contents` to `dir/file`; keys are owner-only from creation.
fn write(dir: &Path, file: &str, contents: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(file);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if secret {
        options.mode(0o600);
    }
    let mut handle = options
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    if secret {
        // `mode` applies only to a file it creates; an existing key file is narrowed too.
        use std::os::unix::fs::PermissionsExt;
        handle.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    handle.write_all(contents.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_written_and_a_second_run_keeps_the_ca_key() {
        let dir = tempfile::tempdir().unwrap();
        let args = CertsArgs {
            out: dir.path().to_owned(),
            nodes: vec![1, 2],
            hosts: vec!["db.internal".into()],
        };
        run(&args).unwrap();
        for file in [
            "ca.pem",
            "ca-key.pem",
            "node-1.pem",
            "node-1-key.pem",
            "node-2.pem",
            "admin.pem",
            "admin-key.pem",
        ] {
            assert!(dir.path().join(file).exists(), "{file}");
        }
        let key_before = std::fs::read(dir.path().join("ca-key.pem")).unwrap();
        run(&CertsArgs {
            nodes: vec![3],
            ..args
        })
        .unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("ca-key.pem")).unwrap(),
            key_before
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("node-3-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "keys are owner-only: {mode:o}");
    }
}
