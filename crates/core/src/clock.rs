//! Instants kept in atomics.

use tokio::time::Instant;

/// Nanoseconds from `epoch` to now (zero before it, `u64::MAX` past ~584 years): how a
/// layer keeps an instant in an `AtomicU64`, read back as `epoch + Duration::from_nanos(n)`.
pub fn nanos_since(epoch: Instant) -> u64 {
    let elapsed = Instant::now().saturating_duration_since(epoch);
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}
