"""The tunnel engine: HTTP and TCP tunnels over a TLS WebSocket. Imports nothing of ours."""
