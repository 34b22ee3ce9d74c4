"""The HTTPS admission server: a thin FastAPI shell around the pure core."""
