"""HubSpot: the client, the install flow and the provider (``provider.py``)."""

KEY = "hubspot"  # tenants.crm of a HubSpot installation
