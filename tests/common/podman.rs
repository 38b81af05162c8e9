//! A rootful `podman system service` on a private socket and store, for
//! tests of the Docker Engine API backend. Setup follows DEVELOPERS notes:
//! `runc`, a `containers.conf` with `default_ulimits = []`, and a
//! `registries.conf` marking the test registry insecure (plain HTTP).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Podman {
    child: Child,
    dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// Set once `buildah` made containers in the store (removed on drop).
    buildah_used: std::cell::Cell<bool>,
}

impl Podman {
    /// Starts the service; `insecure` registries (`host:port`) are reached over HTTP.
    pub fn start(insecure: &[&str]) -> Podman {
        let found = Command::new("podman").arg("--version").output();
        if !found.is_ok_and(|o| o.status.success()) {
            panic!("podman is missing: run `bash scripts/test.sh`, which installs podman and runc");
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("containers.conf"),
            "[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             [containers]\ndefault_ulimits = []\n",
        )
        .unwrap();
        let mut regs = String::from("unqualified-search-registries = []\n");
        for r in insecure {
            regs.push_str(&format!(
                "[[registry]]\nlocation = \"{r}\"\ninsecure = true\n"
            ));
        }
        std::fs::write(dir.path().join("registries.conf"), regs).unwrap();
        let socket = dir.path().join("podman.sock");
        let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
        let mut p = Podman {
            child: Command::new("true").spawn().unwrap(),
            socket: socket.clone(),
            dir,
            buildah_used: std::cell::Cell::new(false),
        };
        p.child = p
            .command()
            .args(["system", "service", "--time", "0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("podman system service");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                break;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("podman system service exited ({status}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "podman service did not start:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        p
    }

    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `podman` on this service's store and configuration.
    pub fn command(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .args(["--root"])
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    /// Runs `podman ARGS`, panicking with its stderr on failure; stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `podman run -d --network none --name NAME IMAGE`: a container the tests
    /// start the same way each time; stdout (the container id).
    pub fn start_container(&self, name: &str, image: &str) -> String {
        self.run(&["run", "-d", "--network", "none", "--name", name, image])
    }

    /// `buildah ARGS` on this service's store (buildah's containers are
    /// Podman's "external" ones: counted on their image, not listed);
    /// stdout, trimmed.
    pub fn buildah(&self, args: &[&str]) -> String {
        self.buildah_used.set(true);
        let out = self
            .buildah_command()
            .args(args)
            .output()
            .expect("buildah is missing: run `bash scripts/test.sh`, which installs it");
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    fn buildah_command(&self) -> Command {
        let mut c = Command::new("buildah");
        c.env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .arg("--root")
            .arg(self.path("root"))
            .arg("--runroot")
            .arg(self.path("run"))
            .args(["--storage-driver", "vfs"]);
        c
    }

    /// Stops the API service (the store and its containers stay): the
    /// host is then unreachable at its endpoint.
    pub fn stop_service(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }

    /// The repo digest of `image` in the store, trimmed.
    pub fn image_digest(&self, image: &str) -> String {
        self.run(&["image", "inspect", "--format", "{{.Digest}}", image])
            .trim()
            .to_string()
    }

    /// Image names (`host/repo:tag`) in the store.
    pub fn image_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .run(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// Names of running containers.
    pub fn running(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .run(&["ps", "--format", "{{.Names}}"])
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    pub fn store(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers first (they hold the store), then the service.
        if self.buildah_used.get() {
            let _ = self
                .buildah_command()
                .args(["rm", "--all"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self
            .command()
            .args(["rm", "-f", "-a", "-t", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
