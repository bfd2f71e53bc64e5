"""Delta sync on the server: storage, policy, the REST bridge, endpoints and events."""
