"""Pure authorization: role definitions and the (principal, action, scope) decision."""
