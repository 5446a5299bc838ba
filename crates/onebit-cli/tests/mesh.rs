//! The device mesh from the command line, on loopback: `onebit mesh new-key`, two
//! `onebit worker` processes and `onebit mesh probe` measuring every link; a worker holding
//! another key is a clear error at the head within the join timeout.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn onebit(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_onebit")).args(args).output().expect("onebit");
    let s = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.success(), s(out.stdout), s(out.stderr))
}

fn free_ports(n: usize) -> Vec<u16> {
    let ls: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    ls.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

fn worker(port: u16, key: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_onebit"))
        .args([
            "worker",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--key-file",
            key,
            "--jobs",
            "1",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for a worker to exit by itself, killing it after `limit`.
fn finish(mut c: Child, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(Some(s)) = c.try_wait() {
            return s.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
    false
}

#[test]
fn workers_join_and_every_link_is_probed() {
    let tmp = tempfile::Builder::new().prefix("onebit-mesh-cli-").tempdir().unwrap();
    let dir = tmp.path();
    let key = dir.join("mesh.key").display().to_string();
    let (ok, _, err) = onebit(&["mesh", "new-key", "-o", &key]);
    assert!(ok, "{err}");
    let hex = std::fs::read_to_string(&key).unwrap();
    assert_eq!(hex.trim().len(), 64);
    let (ok, _, err) = onebit(&["mesh", "new-key", "-o", &key]);
    assert!(!ok && err.contains("exists"), "{err}");

    let p = free_ports(3);
    let mesh = dir.join("mesh.toml");
    std::fs::write(
        &mesh,
        format!(
            "key_file = \"mesh.key\"\nhead = \"127.0.0.1:{}\"\nworkers = [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]\n",
            p[0], p[1], p[2]
        ),
    )
    .unwrap();
    let workers = [worker(p[1], &key), worker(p[2], &key)];
    let mesh = mesh.display().to_string();
    let (ok, out, err) = onebit(&[
        "mesh",
        "probe",
        "--mesh",
        &mesh,
        "--pings",
        "5",
        "--reps",
        "2",
        "--join-timeout",
        "20",
    ]);
    for w in workers {
        assert!(finish(w, Duration::from_secs(20)), "a worker did not finish its job");
    }
    assert!(ok, "{err}");
    for link in ["0 - 1", "0 - 2", "1 - 2"] {
        assert!(out.contains(link), "{out}");
    }

    // A worker with another key: the head names the failure instead of waiting forever.
    let other = dir.join("other.key").display().to_string();
    assert!(onebit(&["mesh", "new-key", "-o", &other]).0);
    let p = free_ports(2);
    std::fs::write(
        &mesh,
        format!(
            "key_file = \"mesh.key\"\nhead = \"127.0.0.1:{}\"\nworkers = [\"127.0.0.1:{}\"]\n",
            p[0], p[1]
        ),
    )
    .unwrap();
    let rogue = worker(p[1], &other);
    let t = Instant::now();
    let (ok, _, err) = onebit(&["mesh", "probe", "--mesh", &mesh, "--join-timeout", "3"]);
    assert!(!ok, "a worker with another key joined");
    assert!(err.contains("node 1") && err.lines().count() == 1, "{err}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    finish(rogue, Duration::ZERO);
}
