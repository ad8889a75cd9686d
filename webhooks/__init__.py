"""Inbound edges: product events, CRM webhooks. The only place that parses untrusted input."""
