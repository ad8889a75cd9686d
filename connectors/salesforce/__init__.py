"""Salesforce: the client, the install flow and the provider (``provider.py``)."""

KEY = "salesforce"  # tenants.crm of a Salesforce installation
