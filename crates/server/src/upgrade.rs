//! Binary upgrade without a dropped connection, as nginx's `USR2`, HAProxy's seamless
//! reload and Pingora's graceful upgrade do it: the running process hands its listening
//! sockets to a new one over a Unix socket (`SCM_RIGHTS`), then stops accepting and drains
//! its connections within `shutdown_timeout`, and exits.
//!
//! The listening sockets stay open throughout: both processes hold them during the
//! hand-over, so a connection waiting in the kernel's accept queue is accepted by one or
//! the other, never refused. The new process also inherits the upgrade socket itself, and
//! offers its sockets on it to the next one.
//!
//! ```text
//! new process                          running process
//!   connect(upgrade socket)    ──────▶   accept
//!                              ◀──────   "switchyard-upgrade/1 upgrade,proxy,admin" + fds
//!   serve on the inherited sockets
//!   "ready"                    ──────▶   stop accepting, drain, exit
//! ```

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The first words of the running process's message.
const HELLO: &str = "switchyard-upgrade/1";
/// The new process's answer once it serves on the sockets.
const READY: &[u8] = b"ready";
/// The most sockets handed over: the upgrade socket and the listeners.
const MAX_SOCKETS: usize = 8;
/// The name of the upgrade socket among those handed over.
const UPGRADE: &str = "upgrade";
/// How long the running process waits for its successor to say it serves.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Where the upgrade socket is unless told: `$XDG_RUNTIME_DIR/switchyard-upgrade.sock`,
/// else `/tmp/switchyard-upgrade.sock` (a service would rather name one under
/// `/run/switchyard/`).
pub fn default_socket() -> PathBuf {
    let dir = std::env::var_os("XDG_RUNTIME_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    dir.join("switchyard-upgrade.sock")
}

/// A process's listening sockets, inherited from the process it replaces or bound anew,
/// and the upgrade socket on which it offers them to the next one.
#[derive(Debug)]
pub struct Sockets {
    /// `None`: no upgrade socket (another process holds it); this one cannot be upgraded.
    upgrade: Option<UnixListener>,
    inherited: Vec<(String, OwnedFd)>,
    /// The old process, waiting for "ready".
    predecessor: Option<UnixStream>,
    /// What the next process gets, by name.
    offered: Vec<(&'static str, OwnedFd)>,
}

impl Sockets {
    /// With `take_over`, takes the sockets offered on `path` by the running process;
    /// otherwise listens on `path` for a successor (replacing a socket file that no
    /// process listens on any more). A `path` that another running process holds, or that
    /// cannot be bound, is logged: this process then serves but cannot be upgraded.
    pub fn start(path: &Path, take_over: bool) -> io::Result<Self> {
        if take_over {
            return Self::take_over(path);
        }
        let upgrade = Self::bind(path)
            .inspect_err(|e| tracing::warn!(error = %e, "binary upgrade unavailable"))
            .ok();
        Ok(Self {
            upgrade,
            inherited: Vec::new(),
            predecessor: None,
            offered: Vec::new(),
        })
    }

    fn bind(path: &Path) -> io::Result<UnixListener> {
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{}: a running switchyard listens there (take its sockets over with --upgrade)",
                    path.display()
                ),
            ));
        }
        let _ = std::fs::remove_file(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        UnixListener::bind(path)
    }

    fn take_over(path: &Path) -> io::Result<Self> {
        let stream = UnixStream::connect(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: no running switchyard to take over from: {e}",
                    path.display()
                ),
            )
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut text = [0u8; 256];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut text)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        let text = String::from_utf8_lossy(&text[..got.bytes]);
        let names = text.strip_prefix(HELLO).and_then(|n| n.strip_prefix(' '));
        let names: Vec<String> = names
            .unwrap_or_default()
            .split(',')
            .map(str::to_owned)
            .collect();
        if names.len() != fds.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the running process sent {text:?} with {} sockets",
                    fds.len()
                ),
            ));
        }
        let mut inherited: Vec<(String, OwnedFd)> = names.into_iter().zip(fds).collect();
        let upgrade = inherited.iter().position(|(name, _)| name == UPGRADE);
        let upgrade = upgrade.map(|i| inherited.remove(i).1).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "no upgrade socket handed over")
        })?;
        Ok(Self {
            upgrade: Some(UnixListener::from(upgrade)),
            inherited,
            predecessor: Some(stream),
            offered: Vec::new(),
        })
    }

    /// Whether the sockets come from a running process.
    pub fn is_upgrade(&self) -> bool {
        self.predecessor.is_some()
    }

    /// The listener `name` (`"proxy"`, `"admin"`): the one inherited, wherever it listens
    /// (a changed address takes a restart), else one bound on `addr`. It is offered to the
    /// next process.
    pub async fn listener(
        &mut self,
        name: &'static str,
        addr: SocketAddr,
    ) -> io::Result<TcpListener> {
        let inherited = self.inherited.iter().position(|(n, _)| n == name);
        let listener = match inherited.map(|i| self.inherited.remove(i).1) {
            Some(fd) => {
                let listener = std::net::TcpListener::from(fd);
                listener.set_nonblocking(true)?;
                let listener = TcpListener::from_std(listener)?;
                let bound = listener.local_addr()?;
                if bound != addr {
                    tracing::warn!(%bound, configured = %addr, "{name}: serving the inherited listener; a new address takes a restart");
                }
                listener
            }
            None => TcpListener::bind(addr).await?,
        };
        let fd = listener.as_fd().try_clone_to_owned()?;
        self.offered.push((name, fd));
        Ok(listener)
    }

    /// Tells the process replaced, if any, that this one serves (it stops accepting and
    /// drains), and offers the listeners to the next process from now on. The
    /// [`HandedOver`] resolves once a successor has taken them.
    pub fn serve(self) -> HandedOver {
        if let Some(mut old) = self.predecessor {
            if let Err(e) = old.write_all(READY) {
                tracing::warn!(error = %e, "could not tell the replaced process to stop");
            }
        }
        let (done, handed) = watch::channel(false);
        let offered: Offered = Arc::new(self.offered.into());
        let handed = HandedOver(handed, offered.clone());
        let Some(upgrade) = self.upgrade else {
            return handed;
        };
        std::thread::Builder::new()
            .name("switchyard-upgrade".into())
            .spawn(move || {
                offer(&upgrade, &offered);
                let _ = done.send(true);
            })
            .expect("a thread for the upgrade socket");
        handed
    }
}

/// The listeners offered to a successor, by name; [`HandedOver::reoffer`] replaces one.
/// Locked at a reload that moves a listener and to copy the list for a hand-over: never on
/// the request path.
#[allow(clippy::disallowed_types)]
type Offered = Arc<std::sync::Mutex<Vec<(&'static str, OwnedFd)>>>;

/// Waits on `upgrade` for a successor, hands it the `offered` listeners as they are then
/// (and `upgrade` itself), and returns once one said it serves them. One that goes away
/// before is logged, and the next one waited for.
fn offer(upgrade: &UnixListener, offered: &Offered) {
    for conn in upgrade.incoming() {
        // Copies, so that the lock is not held over the hand-over.
        let offered: Vec<(&'static str, OwnedFd)> = {
            let offered = offered.lock().unwrap_or_else(|e| e.into_inner());
            (offered.iter())
                .filter_map(|(name, fd)| Some((*name, fd.try_clone().ok()?)))
                .collect()
        };
        let mut names = vec![UPGRADE];
        names.extend(offered.iter().map(|(name, _)| *name));
        let message = format!("{HELLO} {}", names.join(","));
        let mut fds: Vec<BorrowedFd<'_>> = vec![upgrade.as_fd()];
        fds.extend(offered.iter().map(|(_, fd)| fd.as_fd()));
        let handed = conn.and_then(|conn| {
            conn.set_read_timeout(Some(READY_WITHIN))?;
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            let iov = [IoSlice::new(message.as_bytes())];
            rustix::net::sendmsg(&conn, &iov, &mut control, SendFlags::empty())?;
            tracing::info!(
                "binary upgrade: listening sockets handed over; waiting for the new process"
            );
            let mut answer = [0u8; 8];
            let n = (&conn).read(&mut answer)?;
            match &answer[..n] == READY {
                true => Ok(()),
                false => Err(io::Error::other("the new process went away before serving")),
            }
        });
        match handed {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "binary upgrade failed; still serving"),
        }
    }
}

/// Resolves once the listening sockets were handed over to a new process: the time for
/// this one to stop accepting and drain. Clones resolve together.
#[derive(Debug, Clone)]
pub struct HandedOver(watch::Receiver<bool>, Offered);

impl HandedOver {
    /// Offers `listener` to the next process as `name` instead of the listener offered so
    /// far (a new `listen` address): the old one's socket closes once its last holder
    /// drops it.
    pub fn reoffer(&self, name: &'static str, listener: &TcpListener) -> io::Result<()> {
        let fd = listener.as_fd().try_clone_to_owned()?;
        let mut offered = self.1.lock().unwrap_or_else(|e| e.into_inner());
        match offered.iter_mut().find(|(n, _)| *n == name) {
            Some((_, old)) => *old = fd,
            None => offered.push((name, fd)),
        }
        Ok(())
    }

    /// Resolves once the sockets were handed over.
    pub async fn wait(mut self) {
        if self.0.wait_for(|done| *done).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves once the sockets were handed over, or on SIGINT or SIGTERM (see
    /// [`shutdown_signal`](crate::shutdown_signal)): the `shutdown` of
    /// [`serve`](crate::serve) for a process that can be upgraded.
    pub async fn or_signal(self) {
        tokio::select! {
            () = self.wait() => tracing::info!("binary upgrade: the new process serves; draining"),
            () = crate::shutdown_signal() => {}
        }
    }
}
