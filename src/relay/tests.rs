use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn opened(s: &mut Session) -> String {
    match s.rx.try_recv() {
        Ok(ToSupervisor::RelayOpen(id)) => id,
        other => panic!("expected a RelayOpen, got {other:?}"),
    }
}

#[tokio::test]
async fn open_claim_and_pipe_carry_bytes_both_ways() {
    let relays = Relays::new();
    let mut s = relays.register("sb", "s1");
    assert!(!s.superseded);
    let opening = relays.open("sb", Duration::from_secs(1)).await.unwrap();
    assert_eq!(opened(&mut s), opening.channel_id);
    let mut sup = relays.claim(&opening.channel_id).unwrap();
    let mut user = opening.pipe.await.unwrap();
    user.write_all(b"ping").await.unwrap();
    let mut b = [0; 4];
    sup.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"ping");
    sup.write_all(b"pong").await.unwrap();
    user.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"pong");
    // Single use.
    let again = relays.claim(&opening.channel_id).unwrap_err();
    assert_eq!(again.message(), "unknown or expired relay channel");
    assert_eq!(relays.pending(), 0);
}

#[tokio::test(start_paused = true)]
async fn open_waits_for_a_session_then_gives_up() {
    let relays = Relays::new();
    let r = Arc::clone(&relays);
    let waiting = tokio::spawn(async move { r.open("sb", Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_secs(5)).await;
    let mut s = relays.register("sb", "s1");
    let opening = waiting.await.unwrap().unwrap();
    assert_eq!(opened(&mut s), opening.channel_id);

    let err = relays.open("other", Duration::from_secs(30)).await.err().unwrap();
    assert_eq!(err.code(), crate::grpc::Code::Unavailable);
    assert_eq!(err.message(), "supervisor session not connected");
}

#[tokio::test]
async fn caps_per_sandbox_and_global() {
    let relays = Relays::new();
    let _s = relays.register("a", "s1");
    let mut keep = Vec::new();
    for _ in 0..MAX_PENDING_PER_SANDBOX {
        keep.push(relays.open("a", Duration::ZERO).await.unwrap());
    }
    let err = relays.open("a", Duration::ZERO).await.err().unwrap();
    assert_eq!(err.message(), "per-sandbox relay limit reached (32 in flight for a)");
    // Claiming frees a place.
    relays.claim(&keep[0].channel_id).unwrap();
    relays.open("a", Duration::ZERO).await.unwrap();

    let mut sessions = Vec::new();
    let mut n = relays.pending();
    for i in 0.. {
        let id = format!("b{i}");
        sessions.push(relays.register(&id, "s"));
        for _ in 0..MAX_PENDING_PER_SANDBOX {
            if n == MAX_PENDING {
                let err = relays.open(&id, Duration::ZERO).await.err().unwrap();
                assert_eq!(err.message(), "gateway relay capacity reached (256 in flight)");
                return;
            }
            keep.push(relays.open(&id, Duration::ZERO).await.unwrap());
            n += 1;
        }
    }
}

#[tokio::test]
async fn a_late_claim_is_refused_and_the_reaper_drops_stale_relays() {
    let relays = Relays::new();
    let _s = relays.register("sb", "s1");
    let late = relays.open("sb", Duration::ZERO).await.unwrap();
    let reaped = relays.open("sb", Duration::ZERO).await.unwrap();
    // The registry's clock is std's (not paused): age the entries instead.
    for p in relays.lock().pending.values_mut() {
        p.created -= CLAIM_TIMEOUT + Duration::from_millis(1);
    }
    let err = relays.claim(&late.channel_id).unwrap_err();
    assert_eq!(err.message(), "relay channel timed out");
    assert_eq!(relays.reap(), 1);
    assert_eq!(relays.pending(), 0);
    assert!(reaped.pipe.await.is_err(), "the waiter sees its relay dropped");
}

#[tokio::test]
async fn a_claim_whose_requester_left_is_an_internal_error() {
    let relays = Relays::new();
    let _s = relays.register("sb", "s1");
    let opening = relays.open("sb", Duration::ZERO).await.unwrap();
    drop(opening.pipe);
    let err = relays.claim(&opening.channel_id).unwrap_err();
    assert_eq!(err.message(), "relay requester dropped");
}

#[tokio::test]
async fn supersede_stops_the_old_session_and_replays_pending_relays() {
    let relays = Relays::new();
    let mut old = relays.register("sb", "s1");
    let opening = relays.open("sb", Duration::ZERO).await.unwrap();
    assert_eq!(opened(&mut old), opening.channel_id);
    let mut new = relays.register("sb", "s2");
    assert!(new.superseded);
    assert!((&mut old.stop).await.is_ok(), "the old session is told to stop");
    assert_eq!(opened(&mut new), opening.channel_id, "the pending relay is replayed");
    // The old session's end must not remove the new one.
    assert!(!relays.remove_if_current("sb", "s1"));
    assert!(relays.is_connected("sb"));
    assert!(relays.remove_if_current("sb", "s2"));
    assert!(!relays.is_connected("sb"));
}

#[tokio::test]
async fn tunnel_caps_and_closing() {
    let relays = Relays::new();
    let mut by_token = Vec::new();
    for _ in 0..MAX_TUNNELS_PER_TOKEN {
        by_token.push(relays.tunnel("t", "sb").unwrap());
    }
    assert_eq!(relays.tunnel("t", "sb").err(), Some(TunnelRefused::Token));
    let mut others = Vec::new();
    for i in MAX_TUNNELS_PER_TOKEN..MAX_TUNNELS_PER_SANDBOX {
        others.push(relays.tunnel(&format!("t{i}"), "sb").unwrap());
    }
    assert_eq!(relays.tunnel("u", "sb").err(), Some(TunnelRefused::Sandbox));
    drop(others.pop());
    let extra = relays.tunnel("u", "sb").unwrap();
    assert_eq!(relays.tunnels(), MAX_TUNNELS_PER_SANDBOX);

    relays.close_tunnels_of("t");
    assert!(*by_token[0].closed.borrow());
    assert!(!*extra.closed.borrow());
    relays.forget_sandbox("sb");
    assert!(*extra.closed.borrow());
    drop((by_token, others, extra));
    assert_eq!(relays.tunnels(), 0);
}

#[tokio::test]
async fn forgetting_a_sandbox_ends_its_session_and_relays() {
    let relays = Relays::new();
    let mut s = relays.register("sb", "s1");
    let opening = relays.open("sb", Duration::ZERO).await.unwrap();
    relays.forget_sandbox("sb");
    assert!((&mut s.stop).await.is_ok());
    assert!(opening.pipe.await.is_err());
    assert!(!relays.is_connected("sb"));
    assert_eq!(relays.pending(), 0);
}
