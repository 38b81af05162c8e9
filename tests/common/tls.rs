//! Test certificates, made with the `openssl` CLI (P-256 keys: quick to make).

use std::path::Path;
use std::process::Command;

pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is missing: run `bash scripts/test.sh`, which installs it");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req MODE` with a fresh P-256 key `NAME-key.pem` for `/CN=NAME`,
/// written to `out` (the one key-and-subject recipe both helpers share).
fn request_with_new_key(dir: &Path, name: &str, mode: &[&str], out: &str) {
    let key = format!("{name}-key.pem");
    let subject = format!("/CN={name}");
    let mut args = vec!["req"];
    args.extend_from_slice(mode);
    args.extend_from_slice(&[
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        out,
        "-subj",
        &subject,
    ]);
    openssl(dir, &args);
}

/// A self-signed CA `NAME.pem` / `NAME-key.pem` (P-256: quick to make).
pub fn make_ca(dir: &Path, name: &str) {
    request_with_new_key(dir, name, &["-x509", "-days", "2"], &format!("{name}.pem"));
}

/// A leaf certificate `NAME.pem` / `NAME-key.pem` signed by `ca`, with the
/// given X.509v3 extensions.
pub fn make_leaf(dir: &Path, name: &str, ca: &str, extensions: &str) {
    request_with_new_key(dir, name, &["-new"], &format!("{name}.csr"));
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("basicConstraints=CA:FALSE\n{extensions}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}-key.pem"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}
