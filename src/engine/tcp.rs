//! ICE-TCP fallback for classrooms behind firewalls that let no UDP through (often only TCP/443
//! is open). The server offers a passive TCP host candidate beside the UDP one; browsers use it
//! only when UDP fails. Each TCP connection carries RFC 4571 frames (a 2-byte length, then one
//! STUN/DTLS/RTP/RTCP packet); the engine sees them as packets with `Protocol::Tcp`, exactly like
//! datagrams.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Largest frame accepted; anything longer is not WebRTC and ends the connection.
const MAX_FRAME: usize = 2048;
/// Frames queued towards one slow TCP peer before new ones are dropped (as UDP would).
const WRITE_QUEUE: usize = 512;
/// A TCP link with no frame for this long is closed.
const IDLE: Duration = Duration::from_secs(60);
/// TCP links open at once, at most.
const MAX_LINKS: usize = 4096;

#[derive(Debug)]
pub(crate) enum TcpEvent {
    Opened {
        remote: SocketAddr,
        writer: mpsc::Sender<Bytes>,
    },
    Packet {
        remote: SocketAddr,
        data: Bytes,
    },
    Closed {
        remote: SocketAddr,
    },
}

/// One RFC 4571 frame.
pub(crate) fn frame(packet: &[u8]) -> Option<Bytes> {
    let len = u16::try_from(packet.len()).ok()?;
    let mut out = BytesMut::with_capacity(2 + packet.len());
    out.put_u16(len);
    out.put_slice(packet);
    Some(out.freeze())
}

/// Accepts TCP links until the engine goes away.
pub(crate) async fn accept_loop(listener: TcpListener, events: mpsc::Sender<TcpEvent>) {
    let open = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if events.is_closed() {
            return;
        }
        if open.load(std::sync::atomic::Ordering::Relaxed) >= MAX_LINKS {
            continue; // dropping the stream refuses the link
        }
        let _ = stream.set_nodelay(true);
        let events = events.clone();
        let open = open.clone();
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            serve(stream, remote, events).await;
            open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
    }
}

async fn serve(stream: TcpStream, remote: SocketAddr, events: mpsc::Sender<TcpEvent>) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
    if events
        .send(TcpEvent::Opened { remote, writer: tx })
        .await
        .is_err()
    {
        return;
    }
    let write = async move {
        while let Some(frame) = rx.recv().await {
            if writer.write_all(&frame).await.is_err() {
                break;
            }
        }
    };
    let read = async {
        let mut len = [0u8; 2];
        loop {
            match tokio::time::timeout(IDLE, reader.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                _ => break,
            }
            let n = u16::from_be_bytes(len) as usize;
            if n == 0 || n > MAX_FRAME {
                tracing::debug!(%remote, n, "TCP frame out of range, closing");
                break;
            }
            let mut buf = vec![0u8; n];
            if reader.read_exact(&mut buf).await.is_err() {
                break;
            }
            let packet = TcpEvent::Packet {
                remote,
                data: Bytes::from(buf),
            };
            if events.send(packet).await.is_err() {
                break;
            }
        }
    };
    // Either side ending ends the link.
    tokio::select! {
        _ = write => {}
        _ = read => {}
    }
    let _ = events.send(TcpEvent::Closed { remote }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_a_big_endian_length() {
        let f = frame(&[1, 2, 3]).unwrap();
        assert_eq!(&f[..], &[0, 3, 1, 2, 3]);
        assert!(frame(&vec![0u8; 70_000]).is_none());
    }

    #[tokio::test]
    async fn reads_frames_and_refuses_garbage() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        tokio::spawn(accept_loop(listener, tx));

        let mut client = TcpStream::connect(addr).await.unwrap();
        // The engine keeps the writer while the link lives; so does this test.
        let (remote, writer) = match rx.recv().await.unwrap() {
            TcpEvent::Opened { remote, writer } => (remote, writer),
            other => panic!("{other:?}"),
        };
        writer.send(frame(b"hello").unwrap()).await.unwrap();
        let mut got = [0u8; 7];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x00\x05hello");

        client.write_all(b"\x00\x03abc").await.unwrap();
        match rx.recv().await.unwrap() {
            TcpEvent::Packet { remote: r, data } => {
                assert_eq!(r, remote);
                assert_eq!(&data[..], b"abc");
            }
            other => panic!("{other:?}"),
        }
        // A length no WebRTC packet has: the link is closed.
        client.write_all(b"\xff\xff").await.unwrap();
        assert!(matches!(rx.recv().await.unwrap(), TcpEvent::Closed { .. }));
    }
}
