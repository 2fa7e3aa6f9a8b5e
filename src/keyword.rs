//! Enums written as keywords in configurations, manifests and on the command line (`adam`, `sparse`, `ig`).
//!
//! [`keyword_enum!`] declares such an enum once: its variants with their keywords, serde (de)serialisation as the
//! keyword, `Display`, `FromStr` (case-insensitive, with an error listing the keywords) and the list of keywords
//! for a command line to offer.

/// Declares a keyword enum: `keyword_enum! { /// doc \n pub enum Name("what it is") { /// doc \n Variant = "kw", } }`.
#[macro_export]
macro_rules! keyword_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $keyword:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $keyword)] $variant,)+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The keyword of every variant, in declaration order.
            pub const KEYWORDS: &'static [&'static str] = &[$($keyword),+];

            /// The variant's keyword.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $keyword,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl std::str::FromStr for $name {
            type Err = anyhow::Error;

            fn from_str(s: &str) -> anyhow::Result<Self> {
                let wanted = s.trim();
                Self::ALL.iter().copied().find(|v| v.name().eq_ignore_ascii_case(wanted)).ok_or_else(|| {
                    anyhow::anyhow!("unknown {} '{s}'; expected one of: {}", $what, Self::KEYWORDS.join(", "))
                })
            }
        }
    };
}

#[cfg(test)]
mod tests {
    crate::keyword_enum! {
        /// A test enum.
        enum Colour("colour") {
            /// Red.
            Red = "red",
            DeepBlue = "deep-blue",
        }
    }

    #[test]
    fn keywords_round_trip_and_errors_list_them() {
        for c in Colour::ALL {
            assert_eq!(c.to_string().parse::<Colour>().unwrap(), *c);
            assert_eq!(serde_json::to_string(c).unwrap(), format!("\"{}\"", c.name()));
        }
        assert_eq!("DEEP-blue".parse::<Colour>().unwrap(), Colour::DeepBlue);
        let e = "green".parse::<Colour>().unwrap_err().to_string();
        assert_eq!(e, "unknown colour 'green'; expected one of: red, deep-blue");
    }
}
