"""Dashboards as code: definitions in Python, Grafana JSON generated from them."""
