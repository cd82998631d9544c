//! The crash test: a writer process is killed with SIGKILL at random points
//! and every write it acknowledged must be in the file, which must open
//! cleanly. The writer is this same test binary, re-executed to run the
//! ignored `crash_writer_child` test alone.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};

use super::tests::{KEY, SECRET, TempDir, all, rec};
use super::*;

const CRASH_DB_ENV: &str = "SLIMGATE_STORE_CRASH_DB";
const CRASH_ROUND_ENV: &str = "SLIMGATE_STORE_CRASH_ROUND";
const CRASH_CHILD_TEST: &str = "store::crash_test::crash_writer_child";
const CRASH_WRITES: u32 = 200;
const CRASH_ROUNDS: u32 = 5;
const CRASH_CREATE_ATTEMPTS: u32 = 20;

fn crash_payload(name: &str) -> Bytes {
    Bytes::from(format!("payload of {name} {SECRET}"))
}

/// The writer the crash test kills: 200 acknowledged batches, each creating
/// one record and rewriting the one before it, printing `ACK <name>` only after the
/// store returned Ok. Does nothing unless started by the crash test.
#[test]
#[ignore = "child process of crash_kill_9_keeps_every_acknowledged_write"]
fn crash_writer_child() {
    let (Ok(path), Ok(round)) = (std::env::var(CRASH_DB_ENV), std::env::var(CRASH_ROUND_ENV))
    else {
        return;
    };
    let store = open(Path::new(&path), Some(KEY)).unwrap();
    let mut out = std::io::stdout().lock();
    for i in 0..CRASH_WRITES {
        let name = format!("r{round}-{i:03}");
        let mut ops = vec![Op::Put {
            kind: Kind::Sandbox,
            record: NewRecord { payload: crash_payload(&name), ..rec(&name, "") },
            expect: Expect::Absent,
        }];
        if i > 0 {
            // Rewrite the previous record too, so batches span several pages.
            let prev = format!("r{round}-{:03}", i - 1);
            ops.push(Op::Put {
                kind: Kind::Sandbox,
                record: NewRecord { payload: crash_payload(&prev), ..rec(&prev, "") },
                expect: Expect::Revision(1),
            });
        }
        store.apply(ops).unwrap();
        writeln!(out, "ACK {name}").unwrap();
        out.flush().unwrap();
    }
}

/// Starts the writer on `path`, its stdout piped.
fn spawn_writer(path: &Path, round: u32) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([CRASH_CHILD_TEST, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CRASH_DB_ENV, path)
        .env(CRASH_ROUND_ENV, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills the writer with SIGKILL and checks it died of it.
fn kill_9(mut child: Child) {
    use std::os::unix::process::ExitStatusExt;
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "writer was not killed: {status}");
}

/// Opens the crashed store and checks that batches were atomic (in each
/// round, every record but the newest was rewritten by the batch that
/// created the next one) and every index agrees with the records.
fn open_and_check(path: &Path) -> Arc<dyn Store> {
    let store = open(path, Some(KEY)).unwrap();
    let count = store.count(Kind::Sandbox).unwrap();
    let listed = store.list(Kind::Sandbox, &ListQuery { order: Order::Name, ..all() }).unwrap();
    assert_eq!(listed.len() as u64, count);
    for (i, r) in listed.iter().enumerate() {
        let round = |r: &Record| r.name.split_once('-').map(|(round, _)| round.to_owned());
        let newest = listed.get(i + 1).is_none_or(|next| round(next) != round(r));
        assert_eq!(r.revision, if newest { 1 } else { 2 }, "{} was half-written", r.name);
        assert_eq!(store.get_by_id(Kind::Sandbox, &r.id).unwrap().as_ref(), Some(r));
        assert_eq!(r.payload, crash_payload(&r.name));
    }
    store
}

fn random_below(rng: &SystemRandom, n: u32) -> u32 {
    let mut b = [0u8; 4];
    rng.fill(&mut b).unwrap();
    u32::from_le_bytes(b) % n
}

#[test]
fn crash_kill_9_keeps_every_acknowledged_write() {
    let dir = TempDir::new();
    let path = dir.file("crash.redb");
    let rng = SystemRandom::new();
    let mut acked: Vec<String> = Vec::new();
    for round in 0..CRASH_ROUNDS {
        // Each round kills the writer after a random number of
        // acknowledged writes, then a random few milliseconds more, which
        // lands inside a later write's commit most of the time.
        let kill_after = 1 + random_below(&rng, CRASH_WRITES - 1);
        let mut child = spawn_writer(&path, round);
        // Kept open until the kill: a closed pipe would end the writer first.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = 0;
        for line in (&mut stdout).lines() {
            if let Some(name) = line.unwrap().strip_prefix("ACK ") {
                acked.push(name.to_owned());
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        assert_eq!(seen, kill_after, "writer stopped early");
        std::thread::sleep(Duration::from_micros(u64::from(random_below(&rng, 3_000))));
        kill_9(child);
        drop(stdout);

        let store = open_and_check(&path);
        for name in &acked {
            let found = store.get(Kind::Sandbox, name).unwrap();
            assert!(found.is_some(), "acknowledged write {name} lost in round {round}");
        }
        let count = store.count(Kind::Sandbox).unwrap();
        assert!(count >= acked.len() as u64);
        eprintln!(
            "crash round {round}: killed after {seen} acks; {count} records, {} acknowledged",
            acked.len()
        );
    }
}

/// A writer killed while it creates the store file (before its first
/// write) leaves no file or a complete one, never one that fails to open.
#[test]
fn crash_while_creating_the_file_leaves_a_usable_store() {
    let dir = TempDir::new();
    let rng = SystemRandom::new();
    // How long a writer takes from spawn to its first acknowledged write
    // here; kills are spread over that span.
    let start = Instant::now();
    let probe_path = dir.file("probe.redb");
    let mut probe = spawn_writer(&probe_path, 0);
    let mut lines = BufReader::new(probe.stdout.take().unwrap()).lines();
    assert!(lines.any(|l| l.unwrap().starts_with("ACK ")));
    let span_us = u32::try_from(start.elapsed().as_micros()).unwrap_or(u32::MAX);
    kill_9(probe);
    open_and_check(&probe_path);

    let mut complete = 0;
    for attempt in 0..CRASH_CREATE_ATTEMPTS {
        let path = dir.file(&format!("create-{attempt}.redb"));
        let child = spawn_writer(&path, 0);
        std::thread::sleep(Duration::from_micros(u64::from(random_below(&rng, span_us))));
        kill_9(child);
        complete += u32::from(path.exists());
        open_and_check(&path);
    }
    eprintln!(
        "creation kills: {complete} of {CRASH_CREATE_ATTEMPTS} left a file; first write after {span_us} us"
    );
}
