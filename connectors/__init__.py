"""CRM connectors: one module per CRM behind one small interface (HubSpot, Salesforce)."""
