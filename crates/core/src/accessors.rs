//! The accessors every middleware service has.

/// Defines `get_ref`, `get_mut` and `into_inner` for the service held in field `$field`,
/// inside an `impl<S> Service<S>` block, as tower's middleware have them.
///
/// ```
/// pub struct Wrapper<S> {
///     inner: S,
/// }
///
/// impl<S> Wrapper<S> {
///     switchyard_core::inner_accessors!(inner: S);
/// }
///
/// let mut w = Wrapper { inner: 1 };
/// *w.get_mut() += 1;
/// assert_eq!(*w.get_ref(), 2);
/// assert_eq!(w.into_inner(), 2);
/// ```
#[macro_export]
macro_rules! inner_accessors {
    ($field:ident: $S:ty) => {
        /// The inner service.
        pub fn get_ref(&self) -> &$S {
            &self.$field
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut $S {
            &mut self.$field
        }

        /// Unwraps the inner service.
        pub fn into_inner(self) -> $S {
            self.$field
        }
    };
}
