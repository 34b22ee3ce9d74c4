"""TLS certificates for the webhook: make, check, store and rotate them."""
