"""The v2 API: devices stored per account, and pushes to an account."""
