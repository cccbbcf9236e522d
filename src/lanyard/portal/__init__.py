"""The web portal: a server-rendered OIDC client of the platform's own directory, acting only
through the ARM, Graph and vault HTTP APIs with the signed-in user's tokens."""
