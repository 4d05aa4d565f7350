"""TLS: the CA and every certificate kind, server contexts, implicit TLS, broken
handshakes, and the CRL/OCSP responder of the revoked profile."""
