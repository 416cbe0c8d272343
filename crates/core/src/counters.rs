//! Structs of statistics counters.

/// Declares a struct of `AtomicU64` counters (zero by `Default`): statistics, bumped and
/// read with relaxed ordering, since no other memory is published through them.
///
/// ```
/// use std::sync::atomic::Ordering::Relaxed;
///
/// switchyard_core::counters! {
///     /// What a layer counted.
///     pub struct Counters { pub hits, pub misses, errors }
/// }
///
/// let counters = Counters::default();
/// counters.hits.fetch_add(1, Relaxed);
/// assert_eq!((counters.hits.load(Relaxed), counters.misses.load(Relaxed)), (1, 0));
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident { $($field_vis:vis $field:ident),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        $vis struct $name {
            $($field_vis $field: ::std::sync::atomic::AtomicU64,)*
        }
    };
}
