//! Destinations that fail the way a tenant's receiver can, on 127.0.0.1:
//!
//! * [`Faulty::refusing`]: a port bound but not listening, so every connection is refused (the
//!   port stays reserved while the value lives, so no other process can take it);
//! * [`Faulty::stalling`]: a listener that never accepts: connections complete in the kernel's
//!   backlog and what is sent is never read or answered;
//! * [`Faulty::resetting`]: a listener that accepts every connection and resets it at once
//!   (`SO_LINGER` 0, so the peer sees a TCP RST).
//!
//! Invariant: every socket and the resetting thread end when the value drops.

use std::{
    net::{SocketAddr, TcpListener},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result, bail};

/// A failing destination on 127.0.0.1; see the module docs.
#[derive(Debug)]
pub struct Faulty {
    port: u16,
    /// Held open for the port's sake (a bound socket, or a listener).
    _socket: OwnedFd,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Faulty {
    /// A port that refuses every connection.
    pub fn refusing() -> Result<Self> {
        // SAFETY: plain socket calls on a descriptor this function owns; `addr` outlives them.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            bail!("socket(): {}", std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket() and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_in of `len` bytes for both calls.
        let bound = unsafe {
            libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) == 0
                && libc::getsockname(fd.as_raw_fd(), (&raw mut addr).cast(), &mut len) == 0
        };
        if !bound {
            bail!("binding a refusing port: {}", std::io::Error::last_os_error());
        }
        Ok(Self {
            port: u16::from_be(addr.sin_port),
            _socket: fd,
            stop: Arc::default(),
            thread: None,
        })
    }

    /// A listener that never accepts.
    pub fn stalling() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a stalling listener")?;
        Ok(Self {
            port: listener.local_addr()?.port(),
            _socket: listener.into(),
            stop: Arc::default(),
            thread: None,
        })
    }

    /// A listener that resets every connection it accepts.
    pub fn resetting() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a resetting listener")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let accepting = listener.try_clone()?;
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                match accepting.accept() {
                    Ok((stream, _)) => {
                        let linger = libc::linger {
                            l_onoff: 1,
                            l_linger: 0,
                        };
                        // SAFETY: `linger` is a valid struct of the given size; the descriptor is
                        // the accepted stream's, open until it drops below.
                        unsafe {
                            libc::setsockopt(
                                stream.as_raw_fd(),
                                libc::SOL_SOCKET,
                                libc::SO_LINGER,
                                (&raw const linger).cast(),
                                std::mem::size_of::<libc::linger>() as libc::socklen_t,
                            );
                        }
                        drop(stream);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Ok(Self {
            port,
            _socket: listener.into(),
            stop,
            thread: Some(thread),
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{ErrorKind, Read, Write},
        net::TcpStream,
    };

    use super::*;

    #[test]
    fn each_destination_fails_its_own_way() -> Result<()> {
        let refusing = Faulty::refusing()?;
        let err = TcpStream::connect(refusing.addr()).err().map(|e| e.kind());
        assert_eq!(err, Some(ErrorKind::ConnectionRefused));

        let stalling = Faulty::stalling()?;
        let mut stream = TcpStream::connect(stalling.addr())?;
        stream.write_all(b"POST / HTTP/1.1\r\n\r\n")?;
        stream.set_read_timeout(Some(Duration::from_millis(200)))?;
        let kind = stream.read(&mut [0; 16]).err().map(|e| e.kind());
        assert!(
            matches!(kind, Some(ErrorKind::WouldBlock | ErrorKind::TimedOut)),
            "{kind:?}"
        );

        let resetting = Faulty::resetting()?;
        let mut stream = TcpStream::connect(resetting.addr())?;
        let kind = stream.read(&mut [0; 16]).err().map(|e| e.kind());
        assert_eq!(kind, Some(ErrorKind::ConnectionReset));
        Ok(())
    }
}
