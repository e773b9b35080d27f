use std::collections::BTreeMap;

use crate::{FormatError, Registration};

/// Every format linked into the program, by name.
///
/// Built once at start-up; a name registered twice is an error then, not a coin toss later.
#[derive(Debug, Clone)]
pub struct Registry {
    by_name: BTreeMap<&'static str, &'static Registration>,
}

impl Registry {
    /// The formats registered with `inventory::submit!` anywhere in the program.
    pub fn from_inventory() -> Result<Self, FormatError> {
        Self::from_registrations(inventory::iter::<Registration>)
    }

    pub fn from_registrations(
        registrations: impl IntoIterator<Item = &'static Registration>,
    ) -> Result<Self, FormatError> {
        let mut by_name = BTreeMap::new();
        for registration in registrations {
            if let Some(first) = by_name.insert(registration.name, registration) {
                return Err(FormatError::Duplicate {
                    name: registration.name,
                    first: first.crate_name,
                    second: registration.crate_name,
                });
            }
        }
        Ok(Self { by_name })
    }

    pub fn get(&self, name: &str) -> Result<&'static Registration, FormatError> {
        self.by_name
            .get(name)
            .copied()
            .ok_or_else(|| FormatError::Unknown {
                name: name.to_owned(),
                known: self.names().join(", "),
            })
    }

    /// Registrations sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &'static Registration> + '_ {
        self.by_name.values().copied()
    }

    /// Names sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }
}
