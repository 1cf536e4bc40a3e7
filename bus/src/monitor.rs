//! A monitor's state: the one type the daemon, its history and the D-Bus
//! `State` property share.

/// A monitor's state, as the D-Bus `State` property spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MonitorState {
    Normal = 0,
    Error = 1,
}

impl MonitorState {
    /// `Normal` or `Error`.
    pub const fn name(self) -> &'static str {
        match self {
            MonitorState::Normal => "Normal",
            MonitorState::Error => "Error",
        }
    }

    /// The state spelled `name`.
    pub fn from_name(name: &str) -> Option<MonitorState> {
        [MonitorState::Normal, MonitorState::Error]
            .into_iter()
            .find(|s| s.name() == name)
    }

    /// The state stored as `v` (`self as u8`); anything but 1 is Normal.
    pub const fn from_u8(v: u8) -> MonitorState {
        if v == MonitorState::Error as u8 {
            MonitorState::Error
        } else {
            MonitorState::Normal
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_stored_values_round_trip() {
        for s in [MonitorState::Normal, MonitorState::Error] {
            assert_eq!(MonitorState::from_name(s.name()), Some(s));
            assert_eq!(MonitorState::from_u8(s as u8), s);
        }
        assert_eq!(MonitorState::from_name("error"), None);
    }
}
