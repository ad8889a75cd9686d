// The card's entry point (product-usage-hsmeta.json): HubSpot renders it on company and
// contact records and signs its fetches to the engine.
import { hubspot } from '@hubspot/ui-extensions';

import { ProductUsageCard } from './ProductUsageCard.tsx';

hubspot.extend<'crm.record.tab'>(({ context }) => (
  <ProductUsageCard
    objectTypeId={context.crm.objectTypeId}
    objectId={context.crm.objectId}
    fetcher={(url) => hubspot.fetch(url)}
  />
));
