"""Bounded loopback load tests against a private devstack; ghz-format JSON reports."""
