"""The public gateway: Envoy configuration rendered from one template."""
