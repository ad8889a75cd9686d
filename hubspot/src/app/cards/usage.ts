// What the app card reads from the PQL engine's backend (GET /hubspot/app-card), and how.

/** The engine's public URL: keep it equal to app-hsmeta.json's permittedUrls.fetch. */
export const BACKEND_URL = 'https://pql.example.com';

/** HubSpot's object type ids of the records the card is on. */
export const OBJECT_TYPES = { contact: '0-1', company: '0-2' } as const;

export interface Usage {
  status: 'synced';
  subject: 'account' | 'user';
  name: string;
  activation: { rate: number; nextStep: string | null };
  engagement: {
    score: number;
    segment: string;
    trend: string | null;
    change: number | null;
  };
  features: { used: string[]; notUsed: string[] };
  pql?: { isPql: boolean; kind: string | null; reason: string; at: string | null };
  leadType?: string | null;
  chanceToConvert?: number | null;
  adminUrl: string;
}

export interface NotSynced {
  status: 'not_synced';
  subject: 'account' | 'user';
  adminUrl: string;
}

export type CardAnswer = Usage | NotSynced;

export type CardState =
  | { kind: 'loading' }
  | { kind: 'error'; message: string }
  | { kind: 'loaded'; answer: CardAnswer };

/** hubspot.fetch's shape, injected so that tests need no HubSpot runtime. */
export type Fetcher = (url: string) => Promise<Pick<Response, 'ok' | 'status' | 'json'>>;

export function cardUrl(objectTypeId: string, objectId: number | string): string {
  const query = new URLSearchParams({ objectTypeId, objectId: String(objectId) });
  // HubSpot adds the portal and the user to the query and signs the request.
  return `${BACKEND_URL}/hubspot/app-card?${query.toString()}`;
}

/** One fetch of the card's data, as a state the card renders. */
export async function loadUsage(
  fetcher: Fetcher,
  objectTypeId: string,
  objectId: number | string,
): Promise<CardState> {
  try {
    const response = await fetcher(cardUrl(objectTypeId, objectId));
    const body = (await response.json()) as CardAnswer | { message?: string };
    if (!response.ok) {
      const message = (body as { message?: string }).message ?? `HTTP ${response.status}`;
      return { kind: 'error', message };
    }
    return { kind: 'loaded', answer: body as CardAnswer };
  } catch (error) {
    return {
      kind: 'error',
      message: error instanceof Error ? error.message : 'The PQL engine did not answer.',
    };
  }
}
