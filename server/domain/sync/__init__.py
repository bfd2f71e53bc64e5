"""Delta sync on the server: storage, the policy that applies device writes through
the domain actions, the change log's commit hook, endpoints and events."""
