"""TLS interception: the host CA, per-SNI leaf certificates, the client-side TLS pipe, and the
choice of which flows to open."""
