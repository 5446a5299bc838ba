//! `onebit run|bench --mesh` on loopback: a pipeline, a tensor-parallel or a hybrid mesh of
//! `onebit worker` processes prints exactly what one process prints (greedy, the shipped
//! model, 2 and 3 nodes); a worker
//! holding a different model file is refused by name before anything runs; a worker killed
//! or stopped (SIGSTOP) mid-run gives the head a clear error naming it within the bound;
//! `onebit plan` measures the mesh and prints every candidate; `onebit bench --mesh` reports
//! per token the exact bytes and exchanges the wire carried.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_onebit"))
}

fn repo(p: &str) -> String {
    format!("{}/../../{p}", env!("CARGO_MANIFEST_DIR"))
}

fn onebit(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().expect("onebit");
    let s = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.success(), s(out.stdout), s(out.stderr))
}

/// A folder with a key and a mesh file for a head and `workers` workers on free ports; the
/// folder goes when the returned `TempDir` drops, a failed test's too.
fn mesh(name: &str, workers: usize) -> (TempDir, String, Vec<u16>) {
    let tmp =
        tempfile::Builder::new().prefix(&format!("onebit-mesh-run-{name}-")).tempdir().unwrap();
    let dir = tmp.path();
    let key = dir.join("mesh.key").display().to_string();
    assert!(onebit(&["mesh", "new-key", "-o", &key]).0);
    let ls: Vec<TcpListener> =
        (0..=workers).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let ports: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
    drop(ls);
    let list: Vec<String> = ports[1..].iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    let toml = format!(
        "key_file = \"mesh.key\"\nhead = \"127.0.0.1:{}\"\nworkers = [{}]\n",
        ports[0],
        list.join(", ")
    );
    let file = dir.join("mesh.toml");
    std::fs::write(&file, toml).unwrap();
    (tmp, file.display().to_string(), ports)
}

fn worker(dir: &Path, port: u16, extra: &[&str]) -> Child {
    worker_jobs(dir, port, 1, extra)
}

/// A worker on `port` that serves `jobs` jobs.
fn worker_jobs(dir: &Path, port: u16, jobs: usize, extra: &[&str]) -> Child {
    let key = dir.join("mesh.key").display().to_string();
    let listen = format!("127.0.0.1:{port}");
    bin()
        .args(["worker", "--listen", &listen, "--key-file", &key, "--jobs", &jobs.to_string()])
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn reap(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn a_pipeline_prints_what_one_node_prints() {
    let model = repo("models/austen.gguf");
    let run = ["run", &model, "-p", "It is a truth universally acknowledged", "-n", "48"];
    let (ok, single, err) = onebit(&run);
    assert!(ok, "{err}");
    for (name, workers, split, wire) in [
        ("two", 1, "", "f32"),
        ("three", 2, "2,1,3", "f32"),
        ("int8", 1, "3,3", "q8"),
        ("tp-two", 1, "tp", "f32"),
        ("tp-three", 2, "tp:1,2,1", "f32"),
        // int8 on the wire: the nodes sum their partial products of o and down.
        ("tp-sum", 1, "tp:1,2", "q8"),
        ("hybrid-three", 2, "hybrid:1,2", "f32"),
        ("per-link", 1, "3,3", "hops=q8,f32"),
        // The same hop at the same block as "per-link", the head's group exact.
        ("hybrid-per-link", 2, "hybrid:2,1/3,3", "hops=q8,f32/groups=f32,-"),
    ] {
        let (tmp, file, ports) = mesh(name, workers);
        let dir = tmp.path();
        let ws: Vec<Child> = ports[1..].iter().map(|&p| worker(dir, p, &[])).collect();
        let mut args = run.to_vec();
        args.extend(["--mesh", &file, "--wire", wire]);
        if let Some(hybrid) = split.strip_prefix("hybrid:") {
            let (groups, blocks) = hybrid.split_once('/').unwrap_or((hybrid, ""));
            args.extend(["--strategy", "hybrid", "--groups", groups]);
            if !blocks.is_empty() {
                args.extend(["--split", blocks]);
            }
        } else if let Some(tp) = split.strip_prefix("tp") {
            args.extend(["--strategy", "tp"]);
            if let Some(shares) = tp.strip_prefix(':') {
                args.extend(["--shares", shares]);
            }
        } else if !split.is_empty() {
            args.extend(["--split", split]);
        }
        let (ok, out, err) = onebit(&args);
        assert!(ok, "{name}: {err}");
        assert_eq!(out, single, "{name}: the pipeline's text differs from one node's");
        let layout = if wire == "q8" && split.starts_with("tp") {
            "o and down by columns, partial updates summed"
        } else if split.starts_with("tp") {
            "mesh: tensor parallel, query heads"
        } else if let Some(hybrid) = split.strip_prefix("hybrid:") {
            let groups = hybrid.split('/').next().unwrap_or_default();
            &format!("mesh: hybrid, nodes per stage [{}]", groups.replace(',', ", "))
        } else {
            "mesh: pipeline, blocks per node"
        };
        assert!(err.contains(layout), "{err}");
        // The head says what each link sends (one name where they all send one type).
        assert!(err.contains(&format!("wire: {wire}\n")), "{name}: {err}");
        ws.into_iter().for_each(reap);
    }
}

#[test]
fn plan_measures_the_mesh_and_predicts_every_candidate() {
    let (tmp, file, ports) = mesh("plan", 1);
    let dir = tmp.path();
    let w = worker_jobs(dir, ports[1], 2, &[]);
    let model = repo("models/austen.gguf");
    let (ok, out, err) = onebit(&["plan", &model, "--mesh", &file, "-t", "1", "--batch", "4"]);
    assert!(ok, "{err}");
    for want in [
        "0 - 1",
        "alone tok/s",
        "one node (0)",
        "one node (1)",
        "pipeline: blocks",
        "tensor parallel",
        "choice:",
    ] {
        assert!(out.contains(want), "no '{want}' in:\n{out}");
    }
    // Every candidate's predicted tok/s is a positive number.
    let rates: Vec<f64> = out
        .lines()
        .filter(|l| {
            l.starts_with("one node") || l.starts_with("pipeline") || l.starts_with("tensor")
        })
        .map(|l| l.split_whitespace().rev().nth(3).unwrap().parse().unwrap())
        .collect();
    // Two one-node plans, and the pipeline and tensor plans priced with f32, f16 and q8 on
    // the wire (the planner weighs the types: --wire auto); a pipeline may also come with a
    // second split (for one sequence, where the nodes' measured speeds differ) and mixing
    // types (where one of its hops alone buys 2 %: on loopback hardly ever).
    assert!(rates.len() >= 8, "{out}");
    assert!(rates.iter().all(|r| *r > 0.0 && r.is_finite()), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("one node")).count(), 2, "{out}");
    for wire in [" f32 ", " f16 ", " q8 "] {
        let n = out.lines().filter(|l| l.starts_with("tensor") && l.contains(wire)).count();
        assert_eq!(n, 1, "{wire}: {out}");
        // A lossy wire's tensor-parallel candidate sums partial updates; f32 gathers.
        let summed = out
            .lines()
            .any(|l| l.starts_with("tensor") && l.contains(wire) && l.contains("summed"));
        assert_eq!(summed, wire != " f32 ", "{wire}: {out}");
        let n = out.lines().filter(|l| l.starts_with("pipeline") && l.contains(wire)).count();
        assert!((1..=2).contains(&n), "{wire}: {out}");
    }
    // A fixed type prices that type alone (from the cached figures).
    let (ok, out, err) =
        onebit(&["plan", &model, "--mesh", &file, "-t", "1", "--batch", "4", "--wire", "q8"]);
    assert!(ok, "{err}");
    let rows = out.lines().filter(|l| l.starts_with("pipeline") || l.starts_with("tensor"));
    assert!((2..=3).contains(&rows.clone().count()), "{out}");
    assert!(rows.clone().all(|l| l.contains(" q8 ")), "{out}");
    let (ok, _, err) = onebit(&["plan", &model, "--mesh", &file, "--wire", "f8"]);
    assert!(!ok && err.contains("unknown --wire 'f8'"), "{err}");
    reap(w);
}

#[test]
fn a_hybrid_plan_on_three_nodes_runs_as_printed_and_prints_what_one_node_prints() {
    let (tmp, file, ports) = mesh("plan-hybrid", 2);
    let dir = tmp.path();
    let ws: Vec<Child> = ports[1..].iter().map(|&p| worker_jobs(dir, p, 2, &[])).collect();
    let model = repo("models/austen.gguf");
    // f32 on the wire: the printed command must print one node's text.
    let plan =
        ["plan", &model, "--mesh", &file, "-t", "1", "--strategy", "hybrid", "--wire", "f32"];
    let (ok, out, err) = onebit(&plan);
    assert!(ok, "{err}");
    // Three nodes: two compositions with a group and more than one stage ([1, 2], [2, 1]),
    // each with one or two splits (for throughput, and for one sequence where it differs).
    let hybrids = |groups: &str| {
        let head = format!("hybrid: nodes per stage {groups}");
        out.lines().filter(|l| l.starts_with(&head)).count()
    };
    assert!((1..=2).contains(&hybrids("[1, 2]")) && (1..=2).contains(&hybrids("[2, 1]")), "{out}");
    assert!(out.contains("choice: hybrid"), "{out}");
    let line = out.lines().find(|l| l.starts_with("run it: ")).expect("a command to run");
    let printed: Vec<&str> = line["run it: onebit ".len()..].split_whitespace().collect();
    let prompt = ["-p", "It is a truth universally acknowledged", "-n", "32"];
    let (ok, single, err) = onebit(&[&["run", &model][..], &prompt].concat());
    assert!(ok, "{err}");
    let (ok, meshed, err) = onebit(&[&printed[..], &prompt, &["--worker-threads", "1"]].concat());
    assert!(ok, "{line}: {err}");
    assert_eq!(meshed, single, "{line}: the hybrid's text differs from one node's");
    assert!(err.contains("mesh: hybrid, nodes per stage"), "{err}");
    ws.into_iter().for_each(reap);
}

#[test]
fn a_worker_with_another_model_file_is_refused_by_name() {
    let (tmp, file, ports) = mesh("other", 1);
    let dir = tmp.path();
    let mut bytes = std::fs::read(repo("models/austen.gguf")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let other = dir.join("other.gguf");
    std::fs::write(&other, bytes).unwrap();
    let w = worker(dir, ports[1], &["--model", &other.display().to_string()]);
    let (ok, _, err) =
        onebit(&["run", &repo("models/austen.gguf"), "-p", "Emma", "-n", "4", "--mesh", &file]);
    assert!(!ok);
    assert!(err.contains("node 1") && err.contains("is not the head's"), "{err}");
    reap(w);
}

/// `onebit bench --mesh -o json`: each test's objects, with the head's traffic per token.
fn bench_json(name: &str, strategy: &str) -> Vec<serde_json::Value> {
    let model = repo("models/austen.gguf");
    let (tmp, file, ports) = mesh(name, 1);
    let dir = tmp.path();
    let w = worker(dir, ports[1], &[]);
    let args = ["bench", &model, "-t", "1", "-p", "16", "-n", "8", "-r", "2", "--batch", "1,2"];
    let mesh_args = ["--mesh", &file, "--strategy", strategy, "--wire", "f32"];
    let (ok, out, err) =
        onebit(&[&args[..], &mesh_args, &["--worker-threads", "1", "-o", "json"]].concat());
    reap(w);
    assert!(ok, "{err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn bench_on_a_mesh_reports_what_the_wire_carried_per_token() {
    // Tensor parallel, f32 pieces: every block gathers its attention outputs, o rows, FFN
    // values and down rows (hidden 256 x 3 + FFN 688 values of 4 bytes a row, 6 blocks), and
    // a decode step its picks (8 bytes a row from the worker), in 4 x 6 + 1 exchanges. The
    // head's commands count too: each run of a test truncates its slots (9 bytes a slot),
    // a prompt is 9 bytes + 4 a token, a greedy step 5 bytes + 9 a row.
    let tests = bench_json("bench-tp", "tp");
    let per_row = 6.0 * (3.0 * 256.0 + 688.0) * 4.0;
    let get = |t: &serde_json::Value, k: &str| t[k].as_f64().unwrap_or_else(|| panic!("{k}: {t}"));
    assert_eq!(tests.len(), 3, "{tests:?}");
    for (t, syncs, bytes) in [
        // A prompt of 16 rows: 24 exchanges and its last row's logits (4096 f32, half from
        // the worker) in one more.
        (&tests[0], 25.0 / 16.0, per_row + (2048.0 * 4.0 + 9.0 + 9.0 + 64.0) / 16.0),
        (&tests[1], 25.0, per_row + 8.0 + 14.0 + 9.0 / 8.0),
        (&tests[2], 25.0 / 2.0, per_row + 8.0 + 23.0 / 2.0 + 18.0 / 16.0),
    ] {
        assert_eq!(get(t, "wire_syncs_per_token"), syncs, "{t}");
        assert_eq!(get(t, "wire_bytes_per_token"), bytes, "{t}");
        assert!(get(t, "wire_wait_ms_per_token") > 0.0, "{t}");
    }
    // A pipeline: one pass a token as it decodes; one node: no wire at all.
    let tests = bench_json("bench-pp", "pp");
    assert_eq!(get(&tests[1], "wire_syncs_per_token"), 1.0, "{tests:?}");
    assert!(get(&tests[1], "wire_bytes_per_token") > 256.0 * 4.0 * 2.0, "{tests:?}");
    let model = repo("models/austen.gguf");
    let (ok, out, err) =
        onebit(&["bench", &model, "-t", "1", "-p", "0", "-n", "4", "-r", "1", "-o", "json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"wire_bytes_per_token\":null"), "{out}");
}

#[test]
fn auto_measures_once_then_reuses_the_figures_and_prints_what_one_node_prints() {
    let model = repo("models/austen.gguf");
    let run = ["run", &model, "-p", "It is a truth universally acknowledged", "-n", "32"];
    let (ok, single, err) = onebit(&run);
    assert!(ok, "{err}");
    let (tmp, file, ports) = mesh("auto", 1);
    let dir = tmp.path();
    let mut w = worker_jobs(dir, ports[1], 5, &[]);
    // Measured now; then from the cache; then measured again on request; then at a context
    // (a cache of another key), then that from the cache.
    for (round, flags, want) in [
        (0, vec![], "measured now"),
        (1, vec![], "figures from"),
        (2, vec!["--remeasure"], "measured now"),
        (3, vec!["--plan-ctx", "40"], "measured now"),
        (4, vec!["--plan-ctx", "40"], "figures from"),
    ] {
        let mut args = run.to_vec();
        args.extend(["--mesh", &file, "--strategy", "auto", "-t", "1", "--worker-threads", "1"]);
        args.extend(flags);
        let (ok, out, err) = onebit(&args);
        assert!(ok, "round {round}: {err}");
        assert_eq!(out, single, "round {round}: auto's text differs from one node's");
        assert!(err.contains("auto: ") && err.contains(want), "round {round}: {err}");
    }
    assert!(dir.join("mesh.toml.measured.toml").exists());
    // For this small model the head alone is the fastest plan, so the worker may still be
    // waiting for a job.
    let _ = w.kill();
    let _ = w.wait();
}

#[test]
fn a_worker_without_the_file_gets_its_shard_from_the_head() {
    let model = repo("models/austen.gguf");
    let run = ["run", &model, "-p", "It is a truth universally acknowledged", "-n", "32"];
    let (ok, single, err) = onebit(&run);
    assert!(ok, "{err}");
    let (tmp, file, ports) = mesh("fetch", 1);
    let dir = tmp.path();
    let (empty, cache) = (dir.join("models"), dir.join("cache"));
    std::fs::create_dir_all(&empty).unwrap();
    let (empty, cache) = (empty.display().to_string(), cache.display().to_string());
    let mut w = worker_jobs(dir, ports[1], 3, &["--models", &empty, "--cache", &cache]);
    for strategy in ["pp", "tp", "pp"] {
        let mut args = run.to_vec();
        args.extend(["--mesh", &file, "--strategy", strategy]);
        let (ok, out, err) = onebit(&args);
        assert!(ok, "{strategy}: {err}");
        assert_eq!(out, single, "{strategy}: the mesh's text differs from one node's");
    }
    let mut kept: Vec<String> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept[0].ends_with("-1-6.gguf") && kept[1].ends_with("-all.gguf"), "{kept:?}");
    assert!(w.wait().unwrap().success());
}

/// Starts `onebit bench --mesh` on a synthetic model long enough to outlast `fault`, applies
/// `fault` to the worker two seconds after the head has formed the mesh (its "wire:" line;
/// before that the head may still be measuring bandwidth, and a worker gone before the mesh
/// forms is one not started yet, waited for until the join timeout), and returns the head's
/// error and how long after the fault it exited.
fn fault_during_bench(name: &str, signal: &str) -> (String, Duration) {
    let (tmp, file, ports) = mesh(name, 1);
    let dir = tmp.path();
    let model = dir.join("m.gguf").display().to_string();
    let (ok, _, err) = onebit(&["init", "--shape", "125m", "-o", &model]);
    assert!(ok, "{err}");
    let w = worker(dir, ports[1], &[]);
    let mut head = bin()
        .args(["bench", &model, "-t", "1", "-p", "0", "-n", "1000", "-r", "50", "--mesh", &file])
        .args(["--worker-threads", "1", "--step-timeout", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, formed) = std::sync::mpsc::channel();
    let stderr = head.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("wire:") {
                let _ = lines.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    if formed.recv_timeout(Duration::from_secs(120)).is_err() {
        reap(head);
        panic!("the head formed no mesh in 120 s: {}", reader.join().unwrap());
    }
    std::thread::sleep(Duration::from_secs(2));
    let pid = w.id().to_string();
    assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    let t = Instant::now();
    wait_bounded(head, Duration::from_secs(20));
    let took = t.elapsed();
    reap(w);
    (reader.join().unwrap(), took)
}

/// Waits for the head to exit (it must, with an error), or panics after `limit`.
fn wait_bounded(mut head: Child, limit: Duration) {
    let t = Instant::now();
    loop {
        if let Some(status) = head.try_wait().unwrap() {
            assert!(!status.success(), "the head finished although its worker failed");
            return;
        }
        if t.elapsed() > limit {
            reap(head);
            panic!("the head hung for {limit:?} after its worker failed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_killed_or_stopped_worker_is_named_within_the_bound() {
    let (err, took) = fault_during_bench("kill", "-KILL");
    assert!(err.contains("node 1") && err.contains("closed"), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (err, took) = fault_during_bench("stop", "-STOP");
    assert!(err.contains("node 1") && err.contains("no answer"), "{err}");
    // The step timeout is 2 s (plus 50 ms per row).
    assert!(took < Duration::from_secs(6), "{took:?}");
}

#[test]
fn mesh_flags_without_a_mesh_are_refused_not_ignored() {
    let model = repo("models/austen.gguf");
    for (flag, value) in
        [("--strategy", "tp"), ("--split", "3,3"), ("--wire", "q8"), ("--groups", "1,2")]
    {
        let (ok, _, err) = onebit(&["run", &model, "-p", "Emma", "-n", "2", flag, value]);
        assert!(!ok);
        assert!(err.contains(&format!("{flag} needs --mesh or --mpi")), "{err}");
    }
    let (ok, _, err) =
        onebit(&["run", &model, "-p", "Emma", "-n", "2", "--device", "gpu", "--mpi"]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    // A planning context without the planner, or longer than the model holds.
    let run = ["run", &model, "-p", "Emma", "-n", "2", "--mesh", "no-such-mesh.toml"];
    let (ok, _, err) = onebit(&[&run[..], &["--strategy", "pp", "--plan-ctx", "5"]].concat());
    assert!(!ok && err.contains("--plan-ctx goes with --strategy auto"), "{err}");
    let (ok, _, err) =
        onebit(&[&run[..], &["--strategy", "auto", "--plan-ctx", "100000000"]].concat());
    assert!(!ok && err.contains("--plan-ctx 100000000: at most 252 for this model"), "{err}");
}

#[test]
fn a_memory_budget_refuses_what_does_not_fit_before_loading_it() {
    let model = repo("models/austen.gguf");
    let (ok, _, err) = onebit(&["run", &model, "-p", "Emma", "-n", "2", "--mem-limit", "0.002"]);
    assert!(!ok);
    assert!(err.contains("the weights of") && err.contains("needs"), "{err}");
    // A worker held to less than its blocks refuses its job; the head names it.
    let (tmp, file, ports) = mesh("budget", 1);
    let dir = tmp.path();
    let w = worker(dir, ports[1], &["--mem-limit", "0.002"]);
    let (ok, _, err) = onebit(&["run", &model, "-p", "Emma", "-n", "2", "--mesh", &file]);
    assert!(!ok);
    assert!(
        err.contains("node 1") && err.contains("blocks 1..6") && err.contains("needs"),
        "{err}"
    );
    reap(w);
}

/// A POST of `body` to `path` on `addr` (HTTP/1.1, one request per connection): the status
/// and the body.
fn http_post(addr: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    let status = reply.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
    (status, body)
}

#[test]
fn a_server_whose_worker_is_killed_forms_the_mesh_again_from_the_others() {
    use std::io::{BufRead, BufReader};
    let model = repo("models/austen.gguf");
    let (tmp, file, ports) = mesh("reform", 2);
    let dir = tmp.path();
    let mut ws: Vec<Child> = ports[1..].iter().map(|&p| worker_jobs(dir, p, 2, &[])).collect();
    let mut server = bin()
        .args(["serve", &model, "--port", "0", "--mesh", &file, "--worker-threads", "1"])
        .args(["-t", "1", "--step-timeout", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(server.stderr.take().unwrap());
    let mut log = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "the server ended:\n{log}");
        log.push_str(&line);
        if let Some(rest) = line.split("on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // The rest of the log, read as it comes.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in err.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let body = r#"{"prompt": "It is a truth universally acknowledged", "max_tokens": 16, "temperature": 0}"#;
    let text = |b: &str| {
        let v: serde_json::Value = serde_json::from_str(b).unwrap();
        v["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let (ok, single, e) =
        onebit(&["run", &model, "-p", "It is a truth universally acknowledged", "-n", "16"]);
    assert!(ok, "{e}");
    let (status, first) = http_post(&addr, "/v1/completions", body);
    assert_eq!(status, 200, "{first}");
    let want = text(&first);
    assert!(single.contains(want.trim_end()), "{single:?} vs {want:?}");
    // The last worker dies: the request that finds it gone fails, the next is served on the
    // head and the other worker.
    let mut last = ws.pop().unwrap();
    last.kill().unwrap();
    last.wait().unwrap();
    let (status, failed) = http_post(&addr, "/v1/completions", body);
    assert_eq!(status, 500, "{failed}");
    let (status, again) = http_post(&addr, "/v1/completions", body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(text(&again), want);
    let logged: Vec<String> = rx.try_iter().collect();
    assert!(
        logged.iter().any(|l| l
            .split_once("mesh formed again: pipeline, blocks per node [")
            .is_some_and(|(_, blocks)| blocks.matches(',').count() == 1)),
        "{logged:?}"
    );
    reap(server);
    ws.into_iter().for_each(reap);
}

/// Runs `onebit args… --mesh` over two workers (each mesh message held 15 ms, so a reply takes
/// seconds), writing `stdin` to it, and kills the last worker once 20 bytes of the reply have
/// come: (stdout, stderr, bytes of stdout before the kill). The head must end by itself.
fn kill_mid_reply(name: &str, args: &[&str], stdin: &str) -> (String, String, usize) {
    kill_mid_reply_of(name, 2, args, stdin)
}

/// `kill_mid_reply` over `workers` workers.
fn kill_mid_reply_of(
    name: &str,
    workers: usize,
    args: &[&str],
    stdin: &str,
) -> (String, String, usize) {
    use std::io::{Read, Write};
    let emu = ["--emulate-link", "15"];
    let (tmp, file, ports) = mesh(name, workers);
    let dir = tmp.path();
    let mut ws: Vec<Child> = ports[1..].iter().map(|&p| worker_jobs(dir, p, 2, &emu)).collect();
    let mut head = bin()
        .args(args)
        .args(["--mesh", &file, "--worker-threads", "1", "-t", "1", "--step-timeout", "2"])
        .args(emu)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    head.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    let (mut out, mut err) = (head.stdout.take().unwrap(), head.stderr.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let (mut text, mut buf) = (Vec::new(), [0u8; 256]);
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            let _ = tx.send(text.len());
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let (t, mut seen) = (Instant::now(), 0);
    while seen < 20 {
        seen = rx.recv_timeout(Duration::from_secs(60)).expect("no reply came");
        assert!(t.elapsed() < Duration::from_secs(60), "no reply came");
    }
    let mut last = ws.pop().unwrap();
    last.kill().unwrap();
    last.wait().unwrap();
    let log = wait_bounded_ok(head, Duration::from_secs(120));
    let (text, log) = (reader.join().unwrap(), log + &errs.join().unwrap());
    ws.into_iter().for_each(reap);
    (text, log, seen)
}

/// Waits for `head` to exit successfully within `limit` (killing it and panicking otherwise).
fn wait_bounded_ok(mut head: Child, limit: Duration) -> String {
    let t = Instant::now();
    loop {
        if let Some(status) = head.try_wait().unwrap() {
            return if status.success() { String::new() } else { format!("exit: {status}\n") };
        }
        if t.elapsed() > limit {
            reap(head);
            panic!("the head hung for {limit:?} after its worker failed");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The log says the mesh was formed again as a two-node pipeline (the head and one worker).
fn formed_again_on_two(log: &str) -> bool {
    log.contains("forming the mesh again")
        && log
            .split_once("mesh formed again: pipeline, blocks per node [")
            .is_some_and(|(_, blocks)| blocks.lines().next().unwrap().matches(',').count() == 1)
}

#[test]
fn a_run_whose_worker_is_killed_mid_reply_goes_on_over_the_others() {
    let model = repo("models/austen.gguf");
    let prompt = "It is a truth universally acknowledged";
    let (ok, single, e) = onebit(&["run", &model, "-p", prompt, "-n", "80"]);
    assert!(ok, "{e}");
    let (text, log, seen) =
        kill_mid_reply("run-reform", &["run", &model, "-p", prompt, "-n", "80"], "");
    assert!(!log.contains("exit:"), "{log}");
    assert!(formed_again_on_two(&log), "{log}");
    // What came before the failure is what one node prints; then the reply goes on to its
    // 80 tokens (the re-formed mesh reads the history as a prompt, whose rounding differs
    // from step-by-step decode's, so later greedy tokens may differ from one node's).
    assert!(
        seen >= 20 && text.as_bytes()[..seen] == single.as_bytes()[..seen],
        "{text:?}\n{single:?}\n{log}"
    );
    assert!(log.contains("generated: 80 tokens"), "{log}");
    assert!(text.len() > seen + 40, "{text:?}");
}

#[test]
fn a_chat_whose_worker_is_killed_mid_reply_goes_on_and_takes_the_next_turn() {
    let model = repo("models/austen.gguf");
    let turns = "It is a truth universally acknowledged\nEmma\n";
    let args = ["chat", &model, "-n", "60"];
    let (text, log, seen) = kill_mid_reply("chat-reform", &args, turns);
    assert!(!log.contains("exit:"), "{log}");
    assert!(formed_again_on_two(&log), "{log}");
    // The cut reply went on, and the second turn was answered on the mesh formed again: its
    // passes (the summary at the end is that mesh's) cover more than the second reply's 60.
    assert!(text.len() > seen + 40, "{text:?}");
    let passes: usize = log
        .split_once("mesh: pipeline, blocks per node [1, 5] · ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    assert!(passes > 60, "{passes} passes\n{log}");
}

#[test]
fn a_run_that_loses_its_only_worker_goes_on_alone() {
    let model = repo("models/austen.gguf");
    let args = ["run", &model, "-p", "It is a truth universally acknowledged", "-n", "80"];
    let (text, log, seen) = kill_mid_reply_of("run-alone", 1, &args, "");
    assert!(!log.contains("exit:"), "{log}");
    assert!(log.contains("no mesh forms again") && log.contains("on this node"), "{log}");
    assert!(log.contains("generated: 80 tokens"), "{log}");
    assert!(text.len() > seen + 40, "{text:?}");
}
