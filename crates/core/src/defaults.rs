//! Settings structs whose defaults stand beside their fields.

/// Declares a struct and its `Default`, each field's default written beside it
/// (`name: Type = default,`), so that a setting, its documentation and its default are read
/// in one place and no field is listed twice.
///
/// ```
/// switchyard_core::with_defaults! {
///     /// A listener's settings.
///     #[derive(Debug, Clone, PartialEq)]
///     pub struct Settings {
///         /// Whether it is served.
///         pub enabled: bool = true,
///         /// Its port.
///         pub port: u16 = 8080,
///     }
/// }
///
/// assert_eq!(Settings::default(), Settings { enabled: true, port: 8080 });
/// ```
#[macro_export]
macro_rules! with_defaults {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field_vis:vis $field:ident: $ty:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[$field_meta])*
                $field_vis $field: $ty,
            )*
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                Self {
                    $($field: $default,)*
                }
            }
        }
    };
}
