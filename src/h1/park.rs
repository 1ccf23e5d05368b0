//! Kept-alive client connections idle for a while wait outside tokio, in a "lot" per worker.
//!
//! A connection waiting for its next request on a task of its own costs about 1.9 KB: the task
//! with its timer and drain registration, and tokio's readiness record for the socket (cache-line
//! aligned). nginx keeps an idle connection in about 0.55 KB. Browsers and SDKs keep tens of
//! thousands of connections open that send a request now and then, so once a plain connection has
//! been idle for [`PARK_AFTER`], its task ends and the socket waits in the lot: taken out of
//! tokio's epoll, added to the lot's own (one-shot, for input or a close), and remembered with its
//! peer, its connection slot and its idle deadline, under 100 bytes. When bytes (or the client's
//! close) arrive, the socket goes back to tokio on a new connection task, which reads the request
//! as any other; when the idle deadline passes, the lot closes it, as the task would have; when
//! the worker drains, the lot closes every socket in it. A busy connection never gets here, and
//! one that does pays three `epoll_ctl` calls and a task per wake-up, after a quarter of a second of silence.
//!
//! The lot's epoll instance is itself registered with the worker's runtime; everything runs on
//! that one thread (the lock is never contended).

use std::collections::VecDeque;
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::event::epoll;
use tokio::io::unix::AsyncFd;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::server::Slot;

/// How long a kept-alive connection waits on its own task before it goes to the lot.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(250);

/// Ready sockets taken from the lot's epoll instance per system call.
const EVENTS: usize = 64;

/// One worker's parked connections.
pub(crate) struct Lot {
    epoll: Arc<OwnedFd>,
    parked: Mutex<Parked>,
    /// Wakes the lot's task when its earliest deadline may have changed.
    wake: Notify,
    /// Set once the worker drains: sockets parked later are closed at once.
    closed: AtomicBool,
}

/// A parked connection.
struct Car {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    slot: Slot,
    generation: u32,
}

#[derive(Default)]
struct Parked {
    /// Indexed by the key in the epoll event; `None` slots are listed in `free`.
    cars: Vec<Option<Car>>,
    free: Vec<u32>,
    /// `(deadline, key, generation)` in the order parked, so in deadline order: every connection
    /// parks with the same idle time left.
    deadlines: VecDeque<(Instant, u32, u32)>,
    generation: u32,
}

/// A connection that came back: its socket has input (or was closed by the client).
pub(crate) struct Returned {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    pub(crate) slot: Slot,
}

impl Lot {
    pub(crate) fn new() -> io::Result<Lot> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(Lot {
            epoll: Arc::new(epoll),
            parked: Mutex::new(Parked::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        })
    }

    /// Whether the lot has stopped taking connections (the worker drains, or the lot failed):
    /// connections then wait on their own tasks.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// Parks `stream` until it has input, or closes it when `idle_left` passes first.
    pub(crate) fn park(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        slot: Slot,
        idle_left: Duration,
    ) {
        if self.is_closed() {
            return;
        }
        let Ok(stream) = stream.into_std() else {
            return;
        };
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        parked.generation = parked.generation.wrapping_add(1);
        let generation = parked.generation;
        let key = match parked.free.pop() {
            Some(key) => key,
            None => {
                parked.cars.push(None);
                (parked.cars.len() - 1) as u32
            }
        };
        let data = u64::from(key) | u64::from(generation) << 32;
        if let Err(e) = self.watch(&stream, data) {
            tracing::debug!(%peer, error = %e, "idle connection not parked; closed");
            parked.free.push(key);
            return;
        }
        parked.cars[key as usize] = Some(Car {
            stream,
            peer,
            slot,
            generation,
        });
        let first = parked.deadlines.is_empty();
        parked
            .deadlines
            .push_back((Instant::now() + idle_left, key, generation));
        drop(parked);
        if first {
            self.wake.notify_one();
        }
    }

    /// Arms the one-shot watch of `stream` for input or a close. A socket parked before is still
    /// in the set (disarmed), so it is re-armed.
    fn watch(&self, stream: &std::net::TcpStream, data: u64) -> io::Result<()> {
        let flags = epoll::EventFlags::IN | epoll::EventFlags::RDHUP | epoll::EventFlags::ONESHOT;
        let data = epoll::EventData::new_u64(data);
        match epoll::add(&*self.epoll, stream, data, flags) {
            Err(rustix::io::Errno::EXIST) => Ok(epoll::modify(&*self.epoll, stream, data, flags)?),
            added => Ok(added?),
        }
    }

    /// Serves the lot until `stop`: each socket with input goes to `resume` (which spawns its
    /// connection task on `connections`), each past its deadline is closed; at `stop`, all are.
    pub(crate) async fn run(
        &self,
        stop: CancellationToken,
        resume: impl FnMut(Returned),
    ) -> io::Result<()> {
        let served = self.serve(stop, resume).await;
        // Also when the lot failed: nothing parks in it any more, and what it holds is closed.
        self.closed.store(true, Ordering::Relaxed);
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        *parked = Parked::default();
        served
    }

    async fn serve(
        &self,
        stop: CancellationToken,
        mut resume: impl FnMut(Returned),
    ) -> io::Result<()> {
        // Sound: `Epoll` owns (a share of) the descriptor, so it stays open while registered,
        // which is what the deprecation of the safe constructors is about (tokio#8587).
        #[allow(deprecated)]
        let ready =
            AsyncFd::with_interest(Epoll(self.epoll.clone()), tokio::io::Interest::READABLE)?;
        let mut events = Vec::with_capacity(EVENTS);
        loop {
            let next = self.next_deadline();
            tokio::select! {
                biased;
                () = stop.cancelled() => {
                    // Input already here is served (its response says `Connection: close`), as
                    // by a connection on its own task, which polls the drain signal last; only
                    // the quiet sockets are closed.
                    while self.resume_ready(&mut events, &mut resume)? {}
                    break;
                }
                guard = ready.readable() => {
                    let mut guard = guard?;
                    if !self.resume_ready(&mut events, &mut resume)? {
                        guard.clear_ready();
                    }
                }
                () = sleep_until(next) => self.expire(Instant::now()),
                () = self.wake.notified() => {}
            }
        }
        Ok(())
    }

    /// Hands every connection with input now (up to EVENTS) to `resume`; whether there may be
    /// more (the batch was full). `events` is scratch space, empty between calls.
    fn resume_ready(
        &self,
        events: &mut Vec<u64>,
        resume: &mut impl FnMut(Returned),
    ) -> io::Result<bool> {
        self.take_ready(events)?;
        let full = events.len() == EVENTS;
        for data in events.drain(..) {
            if let Some(returned) = self.returned(data) {
                resume(returned);
            }
        }
        Ok(full)
    }

    /// The data of the events ready now, without waiting, into `ready` (empty, room for EVENTS).
    fn take_ready(&self, ready: &mut Vec<u64>) -> io::Result<()> {
        let mut events = [MaybeUninit::<epoll::Event>::uninit(); EVENTS];
        let now = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match epoll::wait(&*self.epoll, &mut events, Some(&now)) {
            Ok((events, _)) => ready.extend(events.iter().map(|e| e.data.u64())),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// The connection an event is for, out of the lot and back in tokio; `None` when it is gone
    /// already (closed at its deadline in the same turn).
    fn returned(&self, data: u64) -> Option<Returned> {
        let (key, generation) = ((data & 0xffff_ffff) as u32, (data >> 32) as u32);
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        if !parked.holds(key, generation) {
            return None;
        }
        let car = parked.cars[key as usize].take()?;
        parked.free.push(key);
        parked.forget_stale_deadlines();
        drop(parked);
        let stream = TcpStream::from_std(car.stream).ok()?;
        Some(Returned {
            stream,
            peer: car.peer,
            slot: car.slot,
        })
    }

    fn next_deadline(&self) -> Option<Instant> {
        let parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        parked.deadlines.front().map(|&(at, _, _)| at)
    }

    /// Closes every parked connection whose deadline is `now` or past; forgets the deadlines of
    /// those that came back meanwhile.
    fn expire(&self, now: Instant) {
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(at, key, generation)) = parked.deadlines.front() {
            if at > now {
                break;
            }
            parked.deadlines.pop_front();
            if parked.holds(key, generation) {
                if let Some(car) = parked.cars[key as usize].take() {
                    tracing::debug!(peer = %car.peer, reason = "idle longer than idle_timeout", "connection closed");
                }
                parked.free.push(key);
            }
        }
    }
}

impl Parked {
    /// Drops the deadlines of connections that came back once they are most of the queue, so a
    /// connection that parks and returns again and again does not grow it until its deadlines
    /// pass.
    fn forget_stale_deadlines(&mut self) {
        let live = self.cars.len() - self.free.len();
        if self.deadlines.len() <= 2 * live + 64 {
            return;
        }
        let mut deadlines = std::mem::take(&mut self.deadlines);
        deadlines.retain(|&(_, key, generation)| self.holds(key, generation));
        self.deadlines = deadlines;
    }

    /// Whether `key` still holds the connection parked as `generation` (not one that came back,
    /// was closed, or parked there since).
    fn holds(&self, key: u32, generation: u32) -> bool {
        self.cars
            .get(key as usize)
            .and_then(Option::as_ref)
            .is_some_and(|car| car.generation == generation)
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The lot's epoll descriptor, as the runtime watches it.
struct Epoll(Arc<OwnedFd>);

impl AsRawFd for Epoll {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Spawns the lot's task on `connections`; it ends with `stop`.
pub(crate) fn spawn(
    lot: Arc<Lot>,
    connections: &TaskTracker,
    stop: CancellationToken,
    resume: impl FnMut(Returned) + Send + 'static,
) {
    connections.spawn(async move {
        if let Err(e) = lot.run(stop, resume).await {
            tracing::warn!(error = %e, "the idle connection lot failed; its connections are closed");
        }
    });
}

#[cfg(test)]
mod tests {
    //! The lot driven directly, without teal around it.
    use super::*;
    use std::io::Write;
    use std::sync::Mutex as StdMutex;
    use tokio::sync::Semaphore;

    async fn pairs(n: usize) -> Vec<(std::net::TcpStream, TcpStream, SocketAddr)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let client = std::net::TcpStream::connect(addr).unwrap();
            let (server, peer) = listener.accept().await.unwrap();
            out.push((client, server, peer));
        }
        out
    }

    /// Runs `lot` until `want` connections came back (or 3 s); returns them.
    async fn run_until(lot: &Lot, stop: &CancellationToken, want: usize) -> Vec<Returned> {
        let back = StdMutex::new(Vec::new());
        let run = lot.run(stop.clone(), |r| back.lock().unwrap().push(r));
        let enough = async {
            loop {
                if back.lock().unwrap().len() >= want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            tokio::select! { _ = run => {}, () = enough => {} }
        })
        .await;
        back.into_inner().unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn batches_of_exactly_64_and_more_all_come_back() {
        for n in [1usize, 63, 64, 65, 128, 129, 200] {
            let lot = Lot::new().unwrap();
            let slots = Arc::new(Semaphore::new(1000));
            let mut clients = Vec::new();
            for (i, (client, server, peer)) in pairs(n).await.into_iter().enumerate() {
                let mut client = client;
                if i % 2 == 0 {
                    // unread input before it is parked: must fire at once
                    client.write_all(b"x").unwrap();
                }
                let slot = slots.clone().try_acquire_owned().unwrap();
                lot.park(server, peer, slot, Duration::from_secs(60));
                clients.push(client);
            }
            for (i, c) in clients.iter_mut().enumerate() {
                if i % 2 == 1 {
                    c.write_all(b"x").unwrap();
                }
            }
            let stop = CancellationToken::new();
            let back = run_until(&lot, &stop, n).await;
            assert_eq!(
                back.len(),
                n,
                "{n} ready at once: only {} came back",
                back.len()
            );
            drop(back);
            assert_eq!(slots.available_permits(), 1000);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn park_return_churn_keeps_the_lot_small() {
        let n = 20;
        let lot = Lot::new().unwrap();
        let slots = Arc::new(Semaphore::new(1000));
        let mut clients = Vec::new();
        let mut servers = Vec::new();
        for (client, server, peer) in pairs(n).await {
            clients.push(client);
            servers.push((server, peer, slots.clone().try_acquire_owned().unwrap()));
        }
        let stop = CancellationToken::new();
        let mut max_deadlines = 0;
        for _round in 0..300 {
            for (server, peer, slot) in servers.drain(..) {
                lot.park(server, peer, slot, Duration::from_secs(60));
            }
            for c in &mut clients {
                c.write_all(b"x").unwrap();
            }
            for r in run_until(&lot, &stop, n).await {
                let mut byte = [0u8; 1];
                // the byte is there: read it so the socket is quiet again
                loop {
                    match r.stream.try_read(&mut byte) {
                        Ok(1) => break,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            r.stream.readable().await.unwrap()
                        }
                        other => panic!("{other:?}"),
                    }
                }
                servers.push((r.stream, r.peer, r.slot));
            }
            assert_eq!(servers.len(), n);
            let parked = lot.parked.lock().unwrap();
            max_deadlines = max_deadlines.max(parked.deadlines.len());
            assert!(parked.cars.len() <= n);
        }
        assert!(
            max_deadlines <= 2 * n + 64 + n,
            "deadlines grew to {max_deadlines}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn stop_closes_everything_and_refuses_later_parks() {
        let lot = Lot::new().unwrap();
        let slots = Arc::new(Semaphore::new(10));
        let mut ps = pairs(6).await;
        let late = ps.pop().unwrap();
        let mut clients = Vec::new();
        for (client, server, peer) in ps {
            lot.park(
                server,
                peer,
                slots.clone().try_acquire_owned().unwrap(),
                Duration::from_secs(60),
            );
            clients.push(client);
        }
        assert_eq!(slots.available_permits(), 5);
        let stop = CancellationToken::new();
        stop.cancel();
        lot.run(stop, |_| panic!("nothing comes back after stop"))
            .await
            .unwrap();
        assert_eq!(slots.available_permits(), 10);
        lot.park(
            late.1,
            late.2,
            slots.clone().try_acquire_owned().unwrap(),
            Duration::from_secs(60),
        );
        assert_eq!(
            slots.available_permits(),
            10,
            "a park after the drain kept its slot"
        );
        for mut c in clients {
            use std::io::Read;
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut b = [0u8; 1];
            assert_eq!(c.read(&mut b).unwrap(), 0);
        }
    }

    /// Expiry in the lot: close at the deadline, free the slot; a deadline for a connection that
    /// came back and parked again (same key, new generation) closes nothing.
    #[tokio::test(flavor = "current_thread")]
    async fn expiry_respects_generations() {
        let lot = Lot::new().unwrap();
        let slots = Arc::new(Semaphore::new(10));
        let mut ps = pairs(1).await;
        let (mut client, server, peer) = ps.pop().unwrap();
        lot.park(
            server,
            peer,
            slots.clone().try_acquire_owned().unwrap(),
            Duration::from_millis(300),
        );
        client.write_all(b"x").unwrap();
        let stop = CancellationToken::new();
        let mut back = run_until(&lot, &stop, 1).await;
        let r = back.pop().unwrap();
        let mut byte = [0u8; 1];
        r.stream.readable().await.unwrap();
        assert_eq!(r.stream.try_read(&mut byte).unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(150)).await;
        lot.park(r.stream, r.peer, r.slot, Duration::from_millis(300));
        // the stale deadline (at ~300 ms) passes; the live one is at ~450 ms
        let _ = run_until(&lot, &stop, 1).await; // runs 3 s: both deadlines pass
        assert_eq!(slots.available_permits(), 10, "the live deadline closed it");
        {
            let parked = lot.parked.lock().unwrap();
            assert!(parked.cars.iter().all(Option::is_none));
            assert!(parked.deadlines.is_empty());
        }
    }

    /// A request already in a parked socket when the drain begins: a connection on its own task
    /// would serve it (conn.rs polls the drain signal last, "a request already here is served");
    /// before the fix the lot polled `stop` first and closed the socket with the request unread,
    /// so the client got a reset instead of a response.
    #[tokio::test(flavor = "current_thread")]
    async fn a_request_already_here_at_drain_is_resumed_not_reset() {
        use std::io::Read;
        let lot = Lot::new().unwrap();
        let slots = Arc::new(Semaphore::new(10));
        let (mut client, server, peer) = pairs(1).await.pop().unwrap();
        lot.park(
            server,
            peer,
            slots.clone().try_acquire_owned().unwrap(),
            Duration::from_secs(60),
        );
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let stop = CancellationToken::new();
        stop.cancel();
        let mut resumed = 0;
        lot.run(stop, |_| resumed += 1).await.unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut b = [0u8; 1];
        let read = client.read(&mut b);
        assert!(
            resumed == 1,
            "request already in the socket at drain was not resumed; the client read {read:?}"
        );
    }
}
