"""Webhook service: tenant endpoints, SSRF guard, the delivery queue and worker, retention."""
