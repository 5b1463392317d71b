//! A bounded set of reusable chunk buffers: whatever the table size, the
//! COPY readers and decoders together never hold more than
//! `buffers × capacity` bytes of row data.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Reusable `Vec<u8>` buffers of one capacity. [`BufferPool::take`] blocks
/// while all buffers are out, which is what slows the COPY readers down to
/// the decoders' pace.
///
/// A COPY reader holds one buffer at a time (it hands a full one on before
/// taking the next), so `buffers` must exceed the number of buffers the
/// consumers may keep at once; with at least one more buffer than readers,
/// and consumers that give every buffer back, the readers always progress.
#[derive(Debug)]
pub struct BufferPool {
    capacity: usize,
    buffers: usize,
    state: Mutex<State>,
    returned: Condvar,
}

#[derive(Debug)]
struct State {
    free: Vec<Vec<u8>>,
    /// Buffers allocated so far; they are made lazily, up to `buffers`.
    created: usize,
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
            }),
            returned: Condvar::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn buffers(&self) -> usize {
        self.buffers
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
                return vec![0; self.capacity];
            }
            state = self.returned.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Returns a buffer taken from this pool. One that was grown past the
    /// capacity for an oversized row is shrunk back so the pool's memory
    /// bound holds again.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() > self.capacity {
            buf.truncate(self.capacity);
            buf.shrink_to(self.capacity);
        }
        self.lock().free.push(buf);
        self.returned.notify_one();
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
    fn grown_buffers_shrink_back() {
        let pool = BufferPool::new(1, 1024);
        let mut a = pool.take();
        a.resize(1 << 20, 0);
        pool.give(a);
        let b = pool.take();
        assert_eq!(b.len(), 1024);
        assert!(b.capacity() < 1 << 20);
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
