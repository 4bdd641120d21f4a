"""Webhook service: tenant endpoints, SSRF guard, and (later) the outbox and signed delivery."""
