//! A bounded set of reusable chunk buffers: whatever the table size, the
//! COPY readers and decoders together never hold more than
//! `buffers × capacity` bytes of row data.

use std::any::Any;
use std::sync::{Condvar, Mutex, MutexGuard};

/// Called once for each buffer the pool allocates; what it returns is kept
/// until the pool is dropped, and dropped before the buffers. The GPU engine
/// page-locks the buffers with it, so connections fill memory the GPU can
/// copy from directly.
pub type Registrar = Box<dyn Fn(&[u8]) -> Option<Box<dyn Any + Send>> + Send + Sync>;

/// Reusable `Vec<u8>` buffers of one capacity. [`BufferPool::take`] blocks
/// while all buffers are out, which is what slows the COPY readers down to
/// the decoders' pace.
///
/// A COPY reader holds one buffer at a time (it hands a full one on before
/// taking the next), so `buffers` must exceed the number of buffers the
/// consumers may keep at once; with at least one more buffer than readers,
/// and consumers that give every buffer back, the readers always progress.
///
/// The pool never reallocates a buffer it made (a reader that needs more
/// room for one huge row takes a separate, larger buffer, which `give`
/// drops), so a buffer's address is stable for the pool's life.
pub struct BufferPool {
    capacity: usize,
    buffers: usize,
    state: Mutex<State>,
    returned: Condvar,
    registrar: Option<Registrar>,
    /// Nanoseconds spent making buffers (allocating, and registering them
    /// when there is a registrar), summed over threads.
    setup_nanos: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("capacity", &self.capacity)
            .field("buffers", &self.buffers)
            .field("registered", &self.registrar.is_some())
            .finish()
    }
}

struct State {
    free: Vec<Vec<u8>>,
    /// Buffers allocated so far; they are made lazily, up to `buffers`.
    created: usize,
    /// What the registrar returned for each buffer.
    guards: Vec<Box<dyn Any + Send>>,
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        // Registrations go before the memory they cover.
        self.lock().guards.clear();
    }
}

/// The smallest capacity: a buffer must at least hold a message header and
/// the binary COPY file header.
const MIN_CAPACITY: usize = 64;

impl BufferPool {
    /// A pool of at most `buffers` (at least 1) buffers of `capacity` bytes
    /// (at least 64).
    pub fn new(buffers: usize, capacity: usize) -> BufferPool {
        BufferPool {
            capacity: capacity.max(MIN_CAPACITY),
            buffers: buffers.max(1),
            state: Mutex::new(State {
                free: Vec::new(),
                created: 0,
                guards: Vec::new(),
            }),
            returned: Condvar::new(),
            registrar: None,
            setup_nanos: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A pool whose every new buffer is passed to `registrar` (see
    /// [`Registrar`]).
    pub fn with_registrar(buffers: usize, capacity: usize, registrar: Registrar) -> BufferPool {
        let mut pool = BufferPool::new(buffers, capacity);
        pool.registrar = Some(registrar);
        pool
    }

    /// Bytes each of the pool's buffers holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many buffers the pool may make.
    pub fn buffers(&self) -> usize {
        self.buffers
    }

    /// Seconds spent making buffers so far (allocation and registration,
    /// e.g. page-locking for the GPU), summed over the threads that did.
    pub fn setup_seconds(&self) -> f64 {
        self.setup_nanos.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1e9
    }

    /// A buffer whose length is exactly the capacity (its contents are
    /// leftovers of earlier use). Blocks until one is free.
    pub fn take(&self) -> Vec<u8> {
        let mut state = self.lock();
        loop {
            if let Some(mut buf) = state.free.pop() {
                drop(state);
                // Given-back buffers were truncated to their used length;
                // this zero-fills only the tail that was never used.
                buf.resize(self.capacity, 0);
                return buf;
            }
            if state.created < self.buffers {
                state.created += 1;
                drop(state);
                let t = std::time::Instant::now();
                let buf = vec![0; self.capacity];
                if let Some(guard) = self.registrar.as_ref().and_then(|r| r(&buf)) {
                    self.lock().guards.push(guard);
                }
                self.setup_nanos.fetch_add(
                    t.elapsed().as_nanos() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                return buf;
            }
            state = self.returned.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Returns a buffer taken from this pool. One that was grown past the
    /// capacity for an oversized row is shrunk back so the pool's memory
    /// bound holds again.
    pub fn give(&self, buf: Vec<u8>) {
        // Only the pool's own buffers come back into it; a larger one made
        // for a huge row is freed here (the pool buffer it replaced was
        // given back when it was made).
        if buf.capacity() != self.capacity {
            return;
        }
        self.lock().free.push(buf);
        self.returned.notify_one();
    }

    /// Makes `buf` at least `need` bytes long, keeping its first `keep`
    /// bytes. A pool buffer is never reallocated: a larger separate buffer
    /// takes its place and the pool buffer goes back to the pool.
    pub fn ensure_len(&self, buf: &mut Vec<u8>, need: usize, keep: usize) {
        if buf.len() >= need {
            return;
        }
        if buf.capacity() >= need && buf.capacity() != self.capacity {
            buf.resize(need, 0);
            return;
        }
        let mut bigger = vec![0u8; need];
        bigger[..keep].copy_from_slice(&buf[..keep]);
        self.give(std::mem::replace(buf, bigger));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the state valid
        // (a push or pop either happened or not).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrar_sees_every_buffer_once_and_buffers_never_move() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let seen = Arc::new(AtomicUsize::new(0));
        let s2 = seen.clone();
        let pool = BufferPool::with_registrar(
            2,
            1024,
            Box::new(move |b: &[u8]| {
                assert_eq!(b.len(), 1024);
                s2.fetch_add(1, Ordering::SeqCst);
                Some(Box::new(()) as Box<dyn Any + Send>)
            }),
        );
        let mut a = pool.take();
        let a_ptr = a.as_ptr();
        let b = pool.take();
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        // Growing past the capacity swaps in a separate buffer and returns
        // the pool's own, unmoved.
        a[..3].copy_from_slice(b"abc");
        pool.ensure_len(&mut a, 5000, 3);
        assert_eq!(&a[..3], b"abc");
        assert_eq!(a.len(), 5000);
        let again = pool.take();
        assert_eq!(again.as_ptr(), a_ptr, "the pool buffer came back unmoved");
        pool.give(a); // the big one is dropped, not pooled
        pool.give(b);
        pool.give(again);
        assert_eq!(pool.lock().free.len(), 2);
        assert_eq!(seen.load(Ordering::SeqCst), 2, "no buffer registered twice");
    }
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn buffers_are_reused_and_restored_to_capacity() {
        let pool = BufferPool::new(2, 1024);
        let mut a = pool.take();
        assert_eq!(a.len(), 1024);
        a.truncate(10);
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take();
        assert_eq!(b.len(), 1024);
        assert_eq!(b.as_ptr(), ptr);
    }

    #[test]
    fn a_huge_row_takes_a_separate_buffer_and_the_pool_stays_bounded() {
        let pool = BufferPool::new(1, 1024);
        let mut a = pool.take();
        pool.ensure_len(&mut a, 1 << 20, 0);
        assert_eq!(a.len(), 1 << 20);
        // The pool's only buffer is back already: take does not block.
        let b = pool.take();
        assert_eq!(b.len(), 1024);
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.lock().free.len(), 1, "the big buffer is not pooled");
    }

    #[test]
    fn take_blocks_until_a_buffer_comes_back() {
        let pool = Arc::new(BufferPool::new(1, 64));
        let held = pool.take();
        let p2 = pool.clone();
        let waiter = std::thread::spawn(move || p2.take().len());
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "take() did not block on an empty pool"
        );
        pool.give(held);
        assert_eq!(waiter.join().unwrap(), 64);
    }
}
