"""Real-protocol stand-ins for APNs and FCM, for tests, benchmarks and demos.

They listen on loopback only, speak TLS with ALPN and HTTP/2 (APNs) or HTTPS
(FCM), check credentials as the real services do and answer with the same
status codes and JSON reasons.
"""
