//! The stock `openshell` CLI (`../shared/upstream/`) against slimgate, the
//! way a user types it: `sandbox create -- CMD` (create, wait for READY,
//! run over SSH), `sandbox upload`/`download` (tar over SSH) and
//! `forward start` (ssh -L), with a compute driver double, a supervisor
//! double that registers for every new sandbox, and a real SSH server
//! behind it (asyncssh, standing in for the supervisor's).
//!
//! Skips with a note when `../shared/upstream/` (or ssh/asyncssh) is not
//! there, and fails instead when `CI` is set.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use slimgate::proto::openshell::v1::{self as os, open_shell};
use slimgate_testkit::upstream::Cli;
use support::supervisor::{Bridge, Supervisor};
use support::{DriverDouble, DriverState, TempDir, call, start_gateway};
use tokio::io::AsyncBufReadExt;

const WAIT: Duration = Duration::from_secs(10);

fn tools() -> Option<std::path::PathBuf> {
    let cli = slimgate_testkit::upstream::cli()?;
    let ok = std::process::Command::new("ssh").arg("-V").output().is_ok_and(|o| o.status.success())
        && std::process::Command::new("python3")
            .args(["-c", "import asyncssh"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "CI needs ssh (openssh-client) and asyncssh");
        println!("note: skipping: needs the OpenSSH client and python3 asyncssh");
        return None;
    }
    Some(cli)
}

/// The SSH server, forwarding the sandbox's loopback port `from` to local
/// port `to`.
async fn sshd(from: u16, to: u16) -> (tokio::process::Child, SocketAddr) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/sandbox_sshd.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .arg(format!("{from}={to}"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line()).await.unwrap().unwrap().unwrap();
    let port: u16 = line.strip_prefix("listening ").unwrap().parse().unwrap();
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Register a supervisor for every sandbox that appears, as the sandbox's
/// own supervisor would once its pod starts.
fn auto_supervise(
    channel: tonic::transport::Channel,
    ssh: SocketAddr,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut held = Vec::new();
        loop {
            let req = os::ListSandboxesRequest::default();
            if let Ok(list) = call(&channel, open_shell::LIST_SANDBOXES, req, None).await {
                for sb in list.sandboxes {
                    let id = sb.metadata.unwrap().id;
                    if seen.insert(id.clone())
                        && let Ok(s) =
                            Supervisor::connect(&channel, &id, Bridge::To(ssh), None).await
                    {
                        held.push(s);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn text(out: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_create_upload_download_and_forward() {
    let Some(bin) = tools() else { return };
    let dir = TempDir::new();
    let sock = dir.path("compute.sock");
    let driver = DriverDouble::start(&sock, DriverState::new("img"));
    let gw = start_gateway(
        &dir,
        &["--compute-driver-socket", sock.to_str().unwrap()],
        support::fast_tuning(),
    )
    .await
    .unwrap();
    driver.state.wait_for_watcher(WAIT).await;
    // The service "in the sandbox" that `forward start` reaches, on its
    // own port; the sandbox's port number is a free one.
    let echo = support::supervisor::echo_server().await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (_sshd, ssh_addr) = sshd(free, echo.port()).await;
    let _sup = auto_supervise(gw.channel.clone(), ssh_addr);
    let cli = Cli::new(bin, &dir.path("home"));
    let url = format!("http://127.0.0.1:{}", gw.addr.port());

    let run = |args: Vec<String>, stdin: Vec<u8>| {
        let cli = Cli::new(cli.bin.clone(), &cli.home);
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli.run(&args, &stdin)
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let out = run(args(&["gateway", "add", &url, "--name", "gw"]), vec![]).await.unwrap();
    assert!(out.status.success(), "gateway add: {}", text(&out));

    // Create, wait for READY, run the command over SSH.
    let out =
        run(args(&["sandbox", "create", "--name", "s1", "--no-tty", "--", "echo", "hi"]), vec![])
            .await
            .unwrap();
    assert!(out.status.success(), "sandbox create: {}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hi"), "{}", text(&out));

    // `sandbox exec` runs through ExecSandbox (the gateway's own SSH client):
    // output, stdin and a non-zero exit code.
    let out = run(
        args(&[
            "sandbox",
            "exec",
            "-n",
            "s1",
            "--no-tty",
            "--",
            "sh",
            "-c",
            "cat; echo done; exit 4",
        ]),
        b"piped in\n".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "piped in\ndone\n", "{}", text(&out));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));

    // Upload a file (DEST names the file), then download it again.
    let local = dir.path("up.txt");
    std::fs::write(&local, b"uploaded through slimgate\n").unwrap();
    let remote = dir.path("remote");
    std::fs::create_dir_all(&remote).unwrap();
    let out = run(
        args(&[
            "sandbox",
            "upload",
            "s1",
            local.to_str().unwrap(),
            remote.join("up.txt").to_str().unwrap(),
        ]),
        vec![],
    )
    .await
    .unwrap();
    assert!(out.status.success(), "upload: {}", text(&out));
    // The "sandbox" is this machine behind the SSH server: the file landed.
    let listing: Vec<_> = walk(&remote);
    let landed = std::fs::read(remote.join("up.txt")).unwrap_or_default();
    assert_eq!(landed, b"uploaded through slimgate\n", "{}\n{listing:?}", text(&out));
    let back = dir.path("back");
    std::fs::create_dir_all(&back).unwrap();
    let out = run(
        args(&[
            "sandbox",
            "download",
            "s1",
            remote.join("up.txt").to_str().unwrap(),
            back.to_str().unwrap(),
        ]),
        vec![],
    )
    .await
    .unwrap();
    assert!(out.status.success(), "download: {}", text(&out));
    assert_eq!(std::fs::read(back.join("up.txt")).unwrap(), b"uploaded through slimgate\n");

    // Forward a local port to the service in the sandbox (ssh -L through
    // the tunnel).
    let port = free.to_string();
    let local = format!("127.0.0.1:{port}");
    let out = run(args(&["forward", "start", "-d", &port, "s1"]), vec![]).await.unwrap();
    assert!(out.status.success(), "forward start: {}", text(&out));
    let mut c = support::eventually(WAIT, "the forwarded port", || async {
        tokio::net::TcpStream::connect(&local).await.ok()
    })
    .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    c.write_all(b"through the forward").await.unwrap();
    let mut b = [0u8; 19];
    tokio::time::timeout(WAIT, c.read_exact(&mut b)).await.unwrap().unwrap();
    assert_eq!(&b, b"through the forward");
    let out = run(args(&["forward", "stop", &port, "s1"]), vec![]).await.unwrap();
    assert!(out.status.success(), "forward stop: {}", text(&out));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}
