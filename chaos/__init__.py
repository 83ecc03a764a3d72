"""The chaos harness: a fleet of ``outlast worker`` processes killed, stopped and
restarted (and their stores restarted) under load, then checked. See README.md."""
