"""The server-rendered web portal (catalog, sessions, viewer) and the operator panel."""
