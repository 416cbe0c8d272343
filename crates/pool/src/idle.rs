//! The idle HTTP/1.1 connections of a pool: a lock-free queue, first in first out, whose
//! capacity can change while requests take connections from it and put them back.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use crossbeam_queue::ArrayQueue;

/// A bounded lock-free queue that can be resized in place.
///
/// A resize swaps in a new queue and moves the connections over; a connection put back
/// into the old queue meanwhile is moved over by whoever put it there (it looks at the
/// queue in force again after its push), so none is stranded.
pub(crate) struct IdleSet<T> {
    queue: ArcSwap<ArrayQueue<T>>,
}

impl<T> IdleSet<T> {
    /// An empty set holding at most `capacity` (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            queue: ArcSwap::from_pointee(ArrayQueue::new(capacity.max(1))),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.queue.load().len()
    }

    pub(crate) fn capacity(&self) -> usize {
        self.queue.load().capacity()
    }

    /// The oldest one put back.
    pub(crate) fn pop(&self) -> Option<T> {
        self.queue.load().pop()
    }

    /// The oldest one put back, and how many are left after it.
    pub(crate) fn pop_counted(&self) -> (Option<T>, usize) {
        let queue = self.queue.load();
        (queue.pop(), queue.len())
    }

    /// Puts `item` back; what does not fit goes to `evict`.
    pub(crate) fn push(&self, item: T, mut evict: impl FnMut(T)) {
        let queue = self.queue.load();
        if let Err(item) = queue.push(item) {
            evict(item);
            return;
        }
        // Resized meanwhile: what went into the old queue follows to the new one.
        if !Arc::ptr_eq(&queue, &self.queue.load()) {
            self.follow(Guard::into_inner(queue), &mut evict);
        }
    }

    /// Changes the capacity to `capacity` (at least one): the oldest connections beyond it
    /// go to `evict`, the others stay in order.
    pub(crate) fn resize(&self, capacity: usize, mut evict: impl FnMut(T)) {
        let capacity = capacity.max(1);
        let old = self.queue.swap(Arc::new(ArrayQueue::new(capacity)));
        while old.len() > capacity {
            match old.pop() {
                Some(item) => evict(item),
                None => break,
            }
        }
        self.follow(old, &mut evict);
    }

    /// Moves what `from` holds into the queue in force, if `from` is no longer it, and
    /// on until the queue in force stays the same.
    fn follow(&self, mut from: Arc<ArrayQueue<T>>, evict: &mut impl FnMut(T)) {
        loop {
            let to = self.queue.load_full();
            if Arc::ptr_eq(&from, &to) {
                return;
            }
            while let Some(item) = from.pop() {
                if let Err(item) = to.push(item) {
                    evict(item);
                }
            }
            from = to;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smaller_capacity_evicts_the_oldest_and_keeps_the_order() {
        let set = IdleSet::new(4);
        let mut evicted = Vec::new();
        for i in 0..4 {
            set.push(i, |i| evicted.push(i));
        }
        set.push(9, |i| evicted.push(i));
        assert_eq!(evicted, [9], "a full set takes no more");
        set.resize(2, |i| evicted.push(i));
        assert_eq!(evicted, [9, 0, 1]);
        assert_eq!((set.len(), set.capacity()), (2, 2));
        set.resize(8, |i| evicted.push(i));
        set.push(4, |i| evicted.push(i));
        let left: Vec<_> = std::iter::from_fn(|| set.pop()).collect();
        assert_eq!(left, [2, 3, 4]);
        assert_eq!(set.capacity(), 8);
    }

    #[test]
    fn a_push_into_a_replaced_queue_is_moved_over() {
        let set = IdleSet::new(2);
        let stale = set.queue.load_full();
        set.resize(3, |_| unreachable!());
        // As a push that loaded the queue just before the resize: it lands in the old
        // one, and `follow` brings it over.
        stale.push(7).unwrap();
        set.follow(stale, &mut |_| unreachable!());
        assert_eq!(set.pop(), Some(7));
    }
}
