//! Enum values written by name in the configuration. Each enum keeps its
//! names in one table (`ALL` and `name`); parsing and the "expected …" list
//! of an error both read that table.

use faultbridge_ffi::wire::record::{Category, Severity};

/// An enum whose configuration spelling is one name per value.
pub trait Named: Copy + 'static {
    /// Every value, in the order the names are listed in errors.
    fn all() -> &'static [Self];
    /// The configuration spelling of `self`.
    fn to_name(self) -> &'static str;

    /// The value spelled `s`.
    fn from_name(s: &str) -> Option<Self> {
        Self::all().iter().copied().find(|v| v.to_name() == s)
    }

    /// `a, b or c`: the names, for an error message.
    fn expected() -> String {
        let names: Vec<&str> = Self::all().iter().map(|v| v.to_name()).collect();
        match names.split_last() {
            Some((last, [])) => (*last).to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
}

impl Named for Category {
    fn all() -> &'static [Self] {
        &Category::ALL
    }
    fn to_name(self) -> &'static str {
        self.name()
    }
}

impl Named for Severity {
    fn all() -> &'static [Self] {
        &Severity::ALL
    }
    fn to_name(self) -> &'static str {
        self.name()
    }
}

/// Declares an enum spelled by name in the configuration: the variants, their
/// names (one table), `ALL`, `name()` and [`Named`].
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $ty:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $name:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $ty {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $ty {
            /// Every value, in declaration order.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The configuration spelling.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $ty::$variant => $name, )+
                }
            }
        }

        impl $crate::config::names::Named for $ty {
            fn all() -> &'static [Self] {
                $ty::ALL
            }
            fn to_name(self) -> &'static str {
                self.name()
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
pub(crate) use named_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_list() {
        for c in Category::ALL {
            assert_eq!(Category::from_name(c.to_name()), Some(c));
        }
        assert_eq!(Severity::expected(), "info, warning, error or fatal");
        assert_eq!(<Severity as Named>::from_name("Error"), None);
    }
}
