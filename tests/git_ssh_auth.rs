//! `regimen run --git ssh://…` against a real OpenSSH server: Debian's
//! `sshd` started on loopback with its own host key and authorized_keys, the
//! remote a bare repository it serves through `git-upload-pack`. Checks that
//! `REGIMEN_GIT_SSH_KEY` is used, that a missing or refused key ends in one
//! clear error (not a retry loop), and that the server's host key must be
//! listed in a known_hosts file (`REGIMEN_GIT_SSH_KNOWN_HOSTS`, else
//! `~/.ssh/known_hosts`, hashed or not), never trusted blindly.

mod common;

use std::io::Read as _;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, git_plan_once, policy_remote, run};

const SSHD_BIN: &str = "/usr/sbin/sshd";

/// A new ed25519 key pair at `path` (and `path.pub`), optionally encrypted.
fn keygen(path: &Path, passphrase: &str) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-C",
            "regimen-test",
            "-N",
            passphrase,
            "-f",
        ])
        .arg(path)
        .output()
        .expect("ssh-keygen is required: run `bash scripts/test.sh`, which installs openssh");
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `SHA256:…` of a public key file, as OpenSSH itself computes it.
fn fingerprint(pub_key: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_whitespace().nth(1).unwrap().to_string()
}

/// `keytype base64` of a public key file (the comment dropped).
fn pub_key_line(pub_key: &Path) -> String {
    let text = std::fs::read_to_string(pub_key).unwrap();
    let mut f = text.split_whitespace();
    format!("{} {}", f.next().unwrap(), f.next().unwrap())
}

/// An `sshd -D -e` on 127.0.0.1 with a private config, host key and
/// authorized_keys (the test client key); killed when dropped.
struct TestSshd {
    port: u16,
    /// The host's public key file.
    host_pub: PathBuf,
    child: Child,
    dir: tempfile::TempDir,
}

impl TestSshd {
    fn start(authorized_pub: &Path) -> TestSshd {
        if !Path::new(SSHD_BIN).exists() {
            panic!(
                "{SSHD_BIN} is missing: run `bash scripts/test.sh`, which installs the \
                 `openssh-server` package the tests need"
            );
        }
        // sshd insists on its privilege-separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap_or_else(|e| {
            panic!("creating /run/sshd: {e} (the ssh tests start sshd, so run as root like CI)")
        });
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let host_key = d.join("host_ed25519");
        keygen(&host_key, "");
        std::fs::copy(authorized_pub, d.join("authorized_keys")).unwrap();
        let port = free_port();
        let config = format!(
            "Port {port}\n\
             ListenAddress 127.0.0.1\n\
             HostKey {host}\n\
             AuthorizedKeysFile {auth}\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             StrictModes no\n\
             UsePAM no\n\
             PidFile {pid}\n\
             LogLevel VERBOSE\n",
            host = host_key.display(),
            auth = d.join("authorized_keys").display(),
            pid = d.join("sshd.pid").display(),
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = Command::new(SSHD_BIN)
            .arg("-f")
            .arg(d.join("sshd_config"))
            .args(["-D", "-e"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {SSHD_BIN}: {e}"));
        let mut sshd = TestSshd {
            port,
            host_pub: d.join("host_ed25519.pub"),
            child,
            dir,
        };
        sshd.wait_ready();
        sshd
    }

    /// Until the server sends its `SSH-2.0-…` banner.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sshd exited ({status}) before answering:\n{}", self.log());
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut banner = [0; 4];
                if s.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "sshd on port {} did not answer within 10 s:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// A known_hosts line for this server, as `ssh` writes it off port 22.
    fn known_hosts_line(&self) -> String {
        format!(
            "[127.0.0.1]:{} {}\n",
            self.port,
            pub_key_line(&self.host_pub)
        )
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The user sshd logs in: the one running the tests (root in CI).
fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// One `run --once` with an empty `HOME` (no ambient `~/.ssh`) unless
/// `env` sets one. Returns exit code, output and how long it took.
fn run_once(url: &str, cache: &Path, env: &[(&str, &Path)]) -> (i32, String, Duration) {
    let home = cache.with_extension("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = git_plan_once(url, cache);
    cmd.env("HOME", &home);
    cmd.envs(env.iter().copied());
    let started = Instant::now();
    let (code, out) = run(&mut cmd);
    (code, out, started.elapsed())
}

/// What both tests start from: the policy remote, a client key (encrypted
/// with `passphrase` unless empty) that sshd accepts, the `ssh://` URL of the
/// remote, and a known_hosts file listing the server.
struct SshRemote {
    sshd: TestSshd,
    tmp: tempfile::TempDir,
    sha: String,
    key: PathBuf,
    url: String,
    known_hosts: PathBuf,
}

fn ssh_remote(passphrase: &str) -> SshRemote {
    let (tmp, sha) = policy_remote();
    let t = tmp.path();
    let key = t.join("client_key");
    keygen(&key, passphrase);
    let sshd = TestSshd::start(&key.with_extension("pub"));
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        user(),
        sshd.port,
        t.join("policy.git").display()
    );
    let known_hosts = t.join("known_hosts");
    std::fs::write(&known_hosts, sshd.known_hosts_line()).unwrap();
    SshRemote {
        sshd,
        tmp,
        sha,
        key,
        url,
        known_hosts,
    }
}

#[test]
fn git_remote_over_ssh_with_key_and_known_hosts() {
    let SshRemote {
        tmp,
        sha,
        key,
        url,
        known_hosts,
        sshd,
    } = ssh_remote("");
    let t = tmp.path();
    let other_key = t.join("other_key");
    keygen(&other_key, "");
    let host_fp = fingerprint(&sshd.host_pub);
    let kh = ("REGIMEN_GIT_SSH_KNOWN_HOSTS", known_hosts.as_path());
    let good = ("REGIMEN_GIT_SSH_KEY", key.as_path());

    // (a) The right key and a known host: fetched and planned at that commit.
    let (code, out, _) = run_once(&url, &t.join("cache-ok"), &[good, kh]);
    assert_eq!(code, 0, "{out}\nsshd:\n{}", sshd.log());
    assert!(out.contains(&sha[..12]), "the revision is logged:\n{out}");

    // (b) No key: one clear error saying what to set.
    let (code, out, _) = run_once(&url, &t.join("cache-nokey"), &[kh]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REGIMEN_GIT_SSH_KEY"), "{out}");

    // (c) A key the server does not know: refused once, quickly, no retries.
    let connections = sshd.log().matches("Connection from").count();
    let refusals = sshd.log().matches("Failed publickey").count();
    let (code, out, took) = run_once(
        &url,
        &t.join("cache-badkey"),
        &[("REGIMEN_GIT_SSH_KEY", &other_key), kh],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    assert!(took < Duration::from_secs(20), "took {took:?}:\n{out}");
    let log = sshd.log();
    assert_eq!(
        log.matches("Connection from").count() - connections,
        1,
        "one connection for one bad key:\n{log}"
    );
    assert!(
        log.matches("Failed publickey").count() - refusals <= 1,
        "the refused key is not offered again:\n{log}"
    );

    // (d) No known_hosts at all: refused, naming the variable and showing
    // the fingerprint to verify.
    let (code, out, _) = run_once(&url, &t.join("cache-nokh"), &[good]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("REGIMEN_GIT_SSH_KNOWN_HOSTS"), "{out}");
    assert!(
        out.contains(&host_fp),
        "fingerprint {host_fp} shown:\n{out}"
    );

    // For the two known_hosts files below that do not vouch for this server:
    // the right key, and REGIMEN_GIT_SSH_KNOWN_HOSTS naming a file of `line`.
    let with_known_hosts = |name: &str, line: String| {
        let file = t.join(format!("known_hosts_{name}"));
        std::fs::write(&file, line).unwrap();
        let (code, out, _) = run_once(
            &url,
            &t.join(format!("cache-{name}")),
            &[good, ("REGIMEN_GIT_SSH_KNOWN_HOSTS", &file)],
        );
        (code, out)
    };
    let other_pub = pub_key_line(&other_key.with_extension("pub"));

    // A known_hosts file that does not list this host: refused likewise.
    let (code, out) = with_known_hosts("unknown", format!("git.example.com {other_pub}\n"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not in the known_hosts file"), "{out}");
    assert!(
        out.contains(&host_fp),
        "fingerprint {host_fp} shown:\n{out}"
    );
    assert!(out.contains("REGIMEN_GIT_SSH_KNOWN_HOSTS"), "{out}");

    // The host listed with another key (a changed key, or a man in the middle).
    let (code, out) = with_known_hosts(
        "changed",
        format!("[127.0.0.1]:{} {other_pub}\n", sshd.port),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not match"), "{out}");
    assert!(out.contains(&host_fp), "{out}");

    // Without the variable, `~/.ssh/known_hosts` counts, hashed as Debian's
    // ssh writes it by default (`ssh-keygen -H`).
    let cache = t.join("cache-home");
    let home = cache.with_extension("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    let home_kh = home.join(".ssh/known_hosts");
    std::fs::write(&home_kh, sshd.known_hosts_line()).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&home_kh)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::read_to_string(&home_kh)
        .unwrap()
        .starts_with("|1|"));
    let (code, out, _) = run_once(&url, &cache, &[good, ("HOME", &home)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&sha[..12]), "{out}");
}

#[test]
fn git_remote_over_ssh_with_an_encrypted_key() {
    let remote = ssh_remote("key-passphrase");
    let (code, out, _) = run_once(
        &remote.url,
        &remote.tmp.path().join("cache"),
        &[
            ("REGIMEN_GIT_SSH_KEY", &remote.key),
            ("REGIMEN_GIT_SSH_PASSPHRASE", Path::new("key-passphrase")),
            ("REGIMEN_GIT_SSH_KNOWN_HOSTS", &remote.known_hosts),
        ],
    );
    assert_eq!(code, 0, "{out}\nsshd:\n{}", remote.sshd.log());
    assert!(out.contains(&remote.sha[..12]), "{out}");
    assert!(
        !out.contains("key-passphrase"),
        "the passphrase is never printed:\n{out}"
    );
}
