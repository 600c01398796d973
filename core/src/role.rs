//! The plugin's role, from its load-time configuration.

use serde_json::Value;

/// Which broker the plugin runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The queue broker: holds container jobs and mirrors their application jobs.
    Queue,
    /// An application broker: admits only pancake jobs with a checked R.
    App,
}

impl Role {
    /// Read `role=queue|app` from the plugin conf (`flux jobtap load ... role=app`).
    /// The default is `queue`.
    pub fn from_conf(conf: &Value) -> Result<Role, String> {
        match conf.get("role") {
            None | Some(Value::Null) => Ok(Role::Queue),
            Some(Value::String(s)) if s == "queue" => Ok(Role::Queue),
            Some(Value::String(s)) if s == "app" => Ok(Role::App),
            Some(v) => Err(format!("role={v}: expected role=queue or role=app")),
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Queue => "queue",
            Role::App => "app",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn roles() {
        assert_eq!(Role::from_conf(&Value::Null).unwrap(), Role::Queue);
        assert_eq!(Role::from_conf(&json!({})).unwrap(), Role::Queue);
        assert_eq!(Role::from_conf(&json!({"role": "app"})).unwrap(), Role::App);
        assert_eq!(
            Role::from_conf(&json!({"role": "queue"})).unwrap(),
            Role::Queue
        );
        assert!(
            Role::from_conf(&json!({"role": "x"}))
                .unwrap_err()
                .contains("role=queue or role=app")
        );
        assert!(Role::from_conf(&json!({"role": 1})).is_err());
    }
}
