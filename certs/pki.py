"""Pure certificate logic: make a CA and serving certificate, decide on renewal. No I/O."""
