//! TUN devices created inside a chosen network namespace.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::netns::{self, NetnsError};

/// Failure to create or configure a TUN device.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    #[error("device name {0:?} must be 1-15 bytes without NUL")]
    BadName(String),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("namespace thread panicked")]
    ThreadPanicked,
}

const TUN_PATH: &str = "/dev/net/tun";

/// Creates the standard TUN character device node (major 10, minor 200).
fn make_tun_node() -> io::Result<()> {
    std::fs::create_dir_all("/dev/net")?;
    let path = CString::new(TUN_PATH).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated path; mknod only creates a filesystem node.
    let rc = unsafe { libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(10, 200)) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A layer-3 TUN device (no packet-info header): reads and writes raw IP packets.
#[derive(Debug)]
pub struct Tun {
    fd: OwnedFd,
    name: String,
}

impl Tun {
    /// Creates TUN device `name` in network namespace `netns` (a name under
    /// /run/netns). The device lives as long as this handle and disappears with it.
    pub fn create_in(netns_name: &str, name: &str, disable_ipv6: bool) -> Result<Tun, TunError> {
        let ns = netns_name.to_string();
        let dev = name.to_string();
        // setns only moves the calling thread, so do it in a throwaway thread:
        // the device is created in that thread's namespace and stays there.
        std::thread::spawn(move || {
            netns::enter(&ns)?;
            let tun = Tun::create_here(&dev)?;
            if disable_ipv6 {
                // /proc/sys/net is resolved in the opener's namespace. Kernels
                // without IPv6 lack the file, which is fine.
                let path = format!("/proc/sys/net/ipv6/conf/{dev}/disable_ipv6");
                let _ = std::fs::write(path, "1");
            }
            Ok(tun)
        })
        .join()
        .map_err(|_| TunError::ThreadPanicked)?
    }

    /// Creates the device in the calling thread's namespace.
    fn create_here(name: &str) -> Result<Tun, TunError> {
        let cname = CString::new(name).map_err(|_| TunError::BadName(name.into()))?;
        let bytes = cname.as_bytes_with_nul();
        if bytes.len() < 2 || bytes.len() > libc::IFNAMSIZ {
            return Err(TunError::BadName(name.into()));
        }
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(TUN_PATH)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Minimal containers lack the node although the kernel has TUN.
                make_tun_node().and_then(|()| open())
            }
            other => other,
        }
        .map_err(|source| TunError::Io {
            what: "open /dev/net/tun",
            source,
        })?;
        // SAFETY: ifreq is plain data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = *src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: valid fd and a properly initialised ifreq that outlives the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc < 0 {
            return Err(TunError::Io {
                what: "ioctl TUNSETIFF",
                source: io::Error::last_os_error(),
            });
        }
        Ok(Tun {
            fd: file.into(),
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn raw_fd(&self) -> libc::c_int {
        self.fd.as_raw_fd()
    }

    /// Reads one IP packet; `WouldBlock` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe { libc::read(self.raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Injects one IP packet into the device's namespace.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        // SAFETY: packet is valid for reads of packet.len() bytes.
        let n = unsafe { libc::write(self.raw_fd(), packet.as_ptr().cast(), packet.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}
